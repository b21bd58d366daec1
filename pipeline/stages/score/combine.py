"""The combined score a row is selected by: judge scores multiplied, or the documented heuristic.

With a judge: `combine` names the judge scores to multiply (Deita's default
quality x complexity; AlpaGasus accuracy alone or times complexity). A row
missing any of them (unparseable or failed judgment) gets score None: it is
never given a default.

Without a judge (`judge = "none"`), the score is a length heuristic, and the
manifest and each row's meta say so (`score_source = "heuristic"`):

    h_answer = 1 + 5 * clip(ln(answer_chars / 20) / ln(1200 / 20), 0, 1)   # 20 chars -> 1, LIMA's 1,200 -> 6
    h_prompt = 1 + 5 * clip(ln(prompt_words / 4) / ln(64 / 4), 0, 1)      # 4 words -> 1, 64 words -> 6
    score    = h_answer * h_prompt                                          # in [1, 36] like quality x complexity

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

HEURISTIC_VERSION = "len-v1"


def _ramp(x: float, lo: float, hi: float) -> float:
    if x <= lo:
        return 1.0
    return 1.0 + 5.0 * min(1.0, math.log(x / lo) / math.log(hi / lo))


def heuristic_score(row: dict[str, Any]) -> tuple[float, dict[str, float]]:
    """(score, its parts) for the judge-less ranking documented above."""
    answer_chars = len((row.get("output") or "").strip())
    prompt_words = len(f"{row.get('instruction') or ''} {row.get('input') or ''}".split())
    h_answer = _ramp(answer_chars, 20, 1200)
    h_prompt = _ramp(prompt_words, 4, 64)
    return round(h_answer * h_prompt, 6), {"h_answer": round(h_answer, 4), "h_prompt": round(h_prompt, 4)}


def combined_score(scores: dict[str, float | None], combine: str) -> float | None:
    """The product of the scores `combine` names; None when any is missing."""
    value = 1.0
    for name in COMBINE[combine]:
        s = scores.get(name)
        if s is None:
            return None
        value *= s
    return round(value, 6)
