"""The referee of the discrimination step: the teacher's and the student's answers side by side, in both
orders, and the verdict that makes a row hard.

Reads one row's request and the two answers; writes nothing. `requests` gives the two referee requests
(the teacher's answer as Assistant 1, then as Assistant 2; which of the two is sent first is drawn from
the row's seed, so neither position is favoured by the order of the requests either). `verdict` reads
both reviews: each must end with a score 1-10 for each assistant, else the row has no verdict (an
`unparseable` count, not a drop: the row itself is fine). Lion's rule: the gap is the teacher's score
minus the student's, averaged over the two orders, which cancels a referee that prefers a position
(`verdict_of`, shared with the logprobs referee of logprob_referee.py, which reads the scores otherwise).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from random import Random
from typing import Any

from ...prompts import load_template
from ...teacher.base import ChatRequest, Sampling

TEMPLATE = "hard/referee.txt"
SYSTEM = "You are a careful, impartial judge of answer quality."
ORDERS = ("teacher_first", "student_first")  # who is Assistant 1
_SCORE = re.compile(r"assistant\s*([12])\s*[:=\-]?\s*(?:score\s*[:=]?\s*)?(\d+(?:\.\d+)?)", re.IGNORECASE)


def requests(row_id: str, request: str, teacher_answer: str, student_answer: str, sampling: Sampling,
             rng: Random) -> tuple[list[ChatRequest], list[str]]:
    """The two referee requests of one row and the order each one shows (ORDERS), the first drawn by `rng`."""
    template = load_template(TEMPLATE)
    orders = list(ORDERS) if rng.random() < 0.5 else list(reversed(ORDERS))
    out = []
    for order in orders:
        a1, a2 = (teacher_answer, student_answer) if order == "teacher_first" else (student_answer, teacher_answer)
        text = template.render(request=request, answer_1=a1, answer_2=a2)
        out.append(ChatRequest(messages=({"role": "system", "content": SYSTEM}, {"role": "user", "content": text}),
                               sampling=sampling, record_id=row_id, purpose=f"hard:referee:{order}"))
    return out, orders


def parse_scores(text: str | None) -> tuple[float, float] | None:
    """(Assistant 1's score, Assistant 2's) from the last score each gets in `text`; None unless both are 1-10."""
    found: dict[str, float] = {}
    for who, value in _SCORE.findall(text or ""):
        found[who] = float(value)  # the last one wins: the closing lines, not a score quoted in the reasoning
    s1, s2 = found.get("1"), found.get("2")
    if s1 is None or s2 is None or not (1 <= s1 <= 10 and 1 <= s2 <= 10):
        return None
    return s1, s2


@dataclass(frozen=True)
class Verdict:
    teacher_score: float    # mean over both orders
    student_score: float
    gap: float              # teacher_score - student_score
    hard: bool
    by_order: dict[str, dict[str, float]]  # order -> {"teacher": s, "student": s}

    def to_meta(self) -> dict[str, Any]:
        return {"teacher_score": self.teacher_score, "student_score": self.student_score,
                "student_gap": self.gap, "hard": self.hard, "scores_by_order": self.by_order}


def verdict(reviews: dict[str, str | None], threshold: float) -> Verdict | None:
    """The verdict from the review of each order (ORDERS -> text), or None when either has no two scores."""
    scores = {order: parse_scores(reviews.get(order)) for order in ORDERS}
    if any(s is None for s in scores.values()):
        return None
    return verdict_of(scores, threshold)


def verdict_of(scores: dict[str, tuple[float, float]], threshold: float) -> Verdict:
    """The verdict from (Assistant 1's score, Assistant 2's) in each order (ORDERS -> pair), however read."""
    by_order: dict[str, dict[str, float]] = {}
    for order in ORDERS:
        s1, s2 = scores[order]
        teacher, student = (s1, s2) if order == "teacher_first" else (s2, s1)
        by_order[order] = {"teacher": teacher, "student": student}
    t = sum(o["teacher"] for o in by_order.values()) / len(ORDERS)
    s = sum(o["student"] for o in by_order.values()) / len(ORDERS)
    gap = t - s
    return Verdict(teacher_score=t, student_score=s, gap=gap, hard=gap >= threshold, by_order=by_order)
