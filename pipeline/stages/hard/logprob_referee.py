"""The referee read from logprobs (`[hard] referee = "logprobs"`): Lion's side-by-side review in both orders,
each assistant's 1-10 score read as an expected value over the score tokens instead of parsed from a review.

Reads one row's request and the two answers; writes nothing. For each order (referee.ORDERS) and each
assistant (1, 2) one raw text completion (`completion_request`, /v1/completions with top-k logprobs,
greedy, max_tokens 2) of `prompts/hard/referee_score.txt`, which ends right before the number ("Score of Assistant
2: "). The score is sum(s * p_s) over s = 1..10, p renormalised over the valid score tokens among the
first generated position's top-k (a softmax over their logits, as Deita reads its scorers). A token counts
for its digits with surrounding whitespace stripped ("7" and " 7" are both 7; their probabilities add).

"10" with a tokenizer that splits it (SmolLM2 writes digits one by one): the first position cannot tell
"1" from "10". When a "1" is among the first position's top tokens and no whole "10" token is, the
position after that "1" is read: from the reply's second token when the greedy reply wrote that "1",
else from one more completion (max_tokens 1) of the prompt plus that "1" token: the mass of "0" there becomes 10,
the mass of another digit (an invalid 11-19) is dropped, and the rest (a newline, a full stop, anything
outside the top k) ends the number at 1. So p_10 = p_1' * q_0 / (q_0 + q_end) and p_1 = p_1' * q_end /
(q_0 + q_end), where p_1' is the first position's "1". A tokenizer with a "10" token needs no second ask.

A score with no valid score token among the top k (or a reply without logprobs) is no score: the row has
no verdict, with the reason (`unparseable`, as a review without two scores is in text mode).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ...prompts import load_template
from ...teacher.base import ChatRequest, Completion, Sampling, completion_request
from .referee import ORDERS

TEMPLATE = "hard/referee_score.txt"
SCORES = tuple(range(1, 11))
ASSISTANTS = (1, 2)


def prompt(request: str, teacher_answer: str, student_answer: str, order: str, assistant: int) -> str:
    """The completion prompt for `assistant`'s score when the answers are shown in `order`."""
    a1, a2 = (teacher_answer, student_answer) if order == "teacher_first" else (student_answer, teacher_answer)
    return load_template(TEMPLATE).render(request=request, answer_1=a1, answer_2=a2, assistant=assistant)


def sampling(k: int, max_tokens: int = 2) -> Sampling:
    """Greedy, with top-k logprobs: the score is read from the first position's distribution; the second
    token is there for a greedy "1", whose next position then tells 1 from 10 without another request."""
    return Sampling(temperature=0.0, top_p=1.0, max_tokens=max_tokens, logprobs=k)


def first_requests(row_id: str, request: str, teacher_answer: str, student_answer: str, orders: list[str],
                   k: int) -> list[ChatRequest]:
    """Four requests per row: for each order in `orders` (the first drawn per row), Assistant 1 then 2."""
    return [completion_request(prompt(request, teacher_answer, student_answer, order, n), sampling(k),
                               record_id=row_id, purpose=f"hard:referee:{order}:assistant{n}")
            for order in orders for n in ASSISTANTS]


def followup_request(first: ChatRequest, one_token: str) -> ChatRequest:
    """The prompt plus the "1" token the model would write: its next position tells 1 from 10."""
    return completion_request(first.prompt + one_token, sampling(first.sampling.logprobs or 20, max_tokens=1),
                              record_id=first.record_id, purpose=f"{first.purpose}:after1")


def after_in_reply(comp: Completion, one: str) -> dict[str, float] | None:
    """The position after `one` when the reply itself wrote it first (a greedy "1"), else None."""
    lp = comp.logprobs or []
    return position(lp, 1) if lp and lp[0].get("token") == one else None


def position(logprobs: list[dict[str, Any]] | None, i: int = 0) -> dict[str, float] | None:
    """token -> probability among the top-k (and the chosen token) at generated position `i`; None if absent."""
    if not logprobs or len(logprobs) <= i:
        return None
    at = logprobs[i]
    top = at.get("top_logprobs") or []
    pairs = list(top.items()) if isinstance(top, dict) else [(t.get("token"), t.get("logprob")) for t in top]
    if at.get("token") is not None and at.get("logprob") is not None:
        pairs.append((at["token"], at["logprob"]))
    return {t: math.exp(float(lp)) for t, lp in pairs if t is not None and lp is not None}  # a repeat: one token


def score_mass(dist: dict[str, float]) -> dict[int, float]:
    """Score -> probability mass of the tokens that spell it (whitespace stripped), before renormalising."""
    out: dict[int, float] = {}
    for token, p in dist.items():
        s = token.strip()
        if s.isdigit() and s == str(int(s)) and int(s) in SCORES:
            out[int(s)] = out.get(int(s), 0.0) + p
    return out


def one_token(dist: dict[str, float]) -> str | None:
    """The "1" token to continue with when the first position cannot tell 1 from 10, else None."""
    ones = {t: p for t, p in dist.items() if t.strip() == "1"}
    if not ones or any(t.strip() == "10" for t in dist):
        return None
    return max(ones, key=lambda t: (ones[t], t))


def after_one(dist: dict[str, float] | None) -> tuple[float, float]:
    """(share of the "1" mass that is 10, share that is 1) from the position after a "1"."""
    if not dist:
        return 0.0, 1.0  # nothing seen after the "1": the number ends there
    q0 = sum(p for t, p in dist.items() if t == "0")
    q_invalid = sum(p for t, p in dist.items() if t != "0" and t[:1].isdigit())
    q_end = max(0.0, 1.0 - q0 - q_invalid)
    if q0 + q_end <= 0:
        return 0.0, 0.0
    return q0 / (q0 + q_end), q_end / (q0 + q_end)


@dataclass(frozen=True)
class Score:
    value: float | None        # the expected score, 1-10, rounded to 4 places; None: no valid score token
    mass: float                # the probability of the valid score tokens before renormalising
    why: str = ""


def expected(first: dict[str, float] | None, after: dict[str, float] | None = None) -> Score:
    """The expected score from the first position and (a split "10") the position after its "1"."""
    if first is None:
        return Score(None, 0.0, "no logprobs in the reply (the logprobs referee reads the first token's)")
    mass = score_mass(first)
    if one_token(first) is not None:
        ten, one = after_one(after)
        p1 = mass.pop(1)
        mass[10] = mass.get(10, 0.0) + p1 * ten
        mass[1] = p1 * one
    total = sum(mass.values())
    if total <= 0:
        return Score(None, 0.0, f"no score token 1-10 among the first token's top {len(first)}")
    return Score(round(sum(s * p for s, p in mass.items()) / total, 4), round(total, 4))


def judge(teacher: Any, items: list[tuple[str, str, str, str, list[str]]], k: int
          ) -> tuple[list[tuple[dict[str, tuple[float, float]] | None, dict[str, Any]]], list[Completion]]:
    """Scores of each item (row_id, request, teacher_answer, student_answer, orders): ({order: (Assistant 1's,
    Assistant 2's)} or None, details) per item, and every completion (the caller checks the unanswered ones).
    The four first requests of all items go out together, then the follow-ups of the split "10"s whose reply
    did not itself write that "1" first."""
    firsts = [r for it in items for r in first_requests(*it, k)]
    comps = teacher.chat(firsts) if firsts else []
    after: dict[int, dict[str, float]] = {}
    asks = []
    for i, c in enumerate(comps):
        if c.ok and (tok := one_token(position(c.logprobs) or {})) is not None:
            if (seen := after_in_reply(c, tok)) is not None:
                after[i] = seen
            else:
                asks.append((i, followup_request(firsts[i], tok)))
    follow_comps = teacher.chat([r for _, r in asks]) if asks else []
    follow = dict(zip((i for i, _ in asks), follow_comps))
    results = []
    for j, it in enumerate(items):
        by_order: dict[str, tuple[float, float]] = {}
        details: dict[str, Any] = {}
        for o, order in enumerate(it[4]):
            pair = []
            for n in range(len(ASSISTANTS)):
                i = 4 * j + 2 * o + n
                sc = read(comps[i], follow.get(i), after.get(i))
                details[f"{order}:assistant{n + 1}"] = sc.why or {"score": sc.value, "mass": sc.mass}
                pair.append(sc.value)
            if None not in pair:
                by_order[order] = (pair[0], pair[1])
        results.append((by_order if len(by_order) == len(ORDERS) else None, details))
    return results, comps + follow_comps


def read(first: Completion, follow: Completion | None, after: dict[str, float] | None = None) -> Score:
    """The score of one first completion and, for a split "10", the position after its "1" (`after`, from the
    reply itself) or the follow-up that was asked for it."""
    if not first.ok:
        return Score(None, 0.0, f"referee request failed: {first.error.kind if first.error else 'empty reply'}")
    if follow is not None:  # a split "10" asked about: without its answer 1 and 10 stay apart unread
        after = position(follow.logprobs) if follow.ok else None
        if after is None:
            why = follow.error.kind if follow.error else "no logprobs"
            return Score(None, 0.0, f"the follow-up after a '1' (1 or 10?) failed: {why}")
    return expected(position(first.logprobs), after)
