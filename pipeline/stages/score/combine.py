"""The combined score a row is selected by: judge scores multiplied, or the documented heuristic.

With a judge: `combine` names the judge scores to multiply (Deita's default
quality x complexity; AlpaGasus accuracy alone or times complexity). A row
missing any of them (unparseable or failed judgment) gets score None: it is
never given a default.

Without a judge (`judge = "heuristic"`, the embedded demo's), the score is a
heuristic, and the manifest, each row's meta and the card say so
(`score_source = "heuristic"`): it ranks, it is not a quality score.

    h_answer  = 1 + 5 * clip(ln(answer_chars / 20) / ln(1200 / 20), 0, 1)  # 20 chars -> 1, LIMA's 1,200 -> 6
    h_prompt  = 1 + 5 * clip(ln(prompt_words / 4) / ln(64 / 4), 0, 1)     # 4 words -> 1, 64 words -> 6
    relevance = clip(cos(embed(request), embed(answer)), 0, 1)            # MiniLM; heuristic = "length*relevance"
    score     = h_answer * h_prompt * relevance                            # in [0, 36]; "length": without relevance

Why relevance: length cannot see an answer that belongs to another request.
On 150 alpaca_helpfulness_2k rows against the same rows with their answers
moved to other rows, length alone ranked the real rows first with AUC 0.51
(chance) and length x relevance with 0.97; against answers cut to their first
sentence, 0.88 and 0.82 (tests/test_score_realdata.py).

Why length: longer answers are what LIMA curated for and what a selection
by the longest responses rewards ("Long Is More for Alignment", Zhao et al.
2024, found it a strong baseline); Deita's complexity scores rise with
instruction length. It ranks; it does not judge correctness, which is why
the judge columns (quality, complexity, accuracy) stay null.
"""

from __future__ import annotations

import math
from typing import Any

from .config import COMBINE

HEURISTIC_VERSIONS = {"length": "len-v1", "length*relevance": "len-rel-v1"}


def _ramp(x: float, lo: float, hi: float) -> float:
    if x <= lo:
        return 1.0
    return 1.0 + 5.0 * min(1.0, math.log(x / lo) / math.log(hi / lo))


def heuristic_score(row: dict[str, Any], relevance: float | None = None) -> tuple[float, dict[str, float]]:
    """(score, its parts) for the judge-less ranking documented above; `relevance`: the request-answer
    cosine (None: the length ramps alone)."""
    answer_chars = len((row.get("output") or "").strip())
    prompt_words = len(f"{row.get('instruction') or ''} {row.get('input') or ''}".split())
    h_answer = _ramp(answer_chars, 20, 1200)
    h_prompt = _ramp(prompt_words, 4, 64)
    parts = {"h_answer": round(h_answer, 4), "h_prompt": round(h_prompt, 4)}
    score = h_answer * h_prompt
    if relevance is not None:
        parts["relevance"] = round(min(1.0, max(0.0, float(relevance))), 4)
        score *= parts["relevance"]
    return round(score, 6), parts


def request_text(row: dict[str, Any]) -> str:
    """The request a row's answer answers: instruction and input, as the judges see it."""
    ins, inp = row.get("instruction") or "", row.get("input") or ""
    return f"{ins}\n\n{inp}" if inp else ins


def relevances(rows: list[dict[str, Any]], encoder: Any) -> list[float]:
    """Cosine of each row's request and answer embeddings (`encoder.encode` returns unit rows)."""
    if not rows:
        return []
    q = encoder.encode([request_text(r) for r in rows])
    a = encoder.encode([(r.get("output") or "").strip() for r in rows])
    return [float(x) for x in (q * a).sum(axis=1)]


def combined_score(scores: dict[str, float | None], combine: str) -> float | None:
    """The product of the scores `combine` names; None when any is missing."""
    value = 1.0
    for name in COMBINE[combine]:
        s = scores.get(name)
        if s is None:
            return None
        value *= s
    return round(value, 6)
