"""Checks on the teacher's answers (keep, or drop with a reason) and the compact
form of token logprobs kept for token-level distillation.

`check_answer` returns None to keep an answer, or (reason, detail): the stage
turns that into a rejected row, so a failed answer is never an empty output.
"""

from __future__ import annotations

import re
from typing import Any

from ...records import Drop
from ...teacher.base import Completion

# A refusal is judged on the opening of the answer only: an answer that says
# "I can't be sure" halfway through a long explanation is not a refusal.
_REFUSAL = re.compile(
    r"^\W*(?:"
    r"(?:i'?m|i am)\s+(?:sorry|afraid)\b[^.!?\n]{0,80}?\b(?:can(?:no|')?t|unable|not able|won'?t|cannot)\b"
    r"|(?:sorry|unfortunately),?\s+(?:but\s+)?i\s+(?:can(?:no|')?t|cannot|am unable|am not able|won'?t)\b"
    r"|i\s+(?:can(?:no|')?t|cannot|am unable to|am not able to|won'?t|must decline to)\s+"
    r"(?:help|assist|provide|answer|comply|do (?:that|this)|fulfil+|complete|write|generate)\b"
    r"|as an ai(?: language model)?\b[^.!?\n]{0,80}?\b(?:can(?:no|')?t|cannot|unable|not able|don'?t|do not)\b"
    r")",
    re.IGNORECASE,
)
_OPENING_CHARS = 240


def refusal_phrase(text: str) -> str | None:
    m = _REFUSAL.search(text[:_OPENING_CHARS])
    return m.group(0).strip() if m else None


def check_answer(c: Completion, *, truncated: str = "drop", drop_refusals: bool = True) -> Drop | None:
    """None to keep; else (drop_reason, drop_detail). Only row-caused failures reach here: the stage
    leaves a row whose request failed for an outside reason (`Completion.unanswered`) unanswered."""
    if c.error is not None and c.error.kind == "too_long":
        return Drop("too_long", c.error.message)
    if c.error is not None:
        return Drop("teacher_error", f"{c.error.kind}: {c.error.message} (after {c.error.attempts} attempt(s))")
    if c.text is None:
        return Drop("teacher_error", "invalid_response: completion without text")
    text = c.text.strip()
    if not text:
        return Drop("empty_output", f"teacher returned an empty answer (finish_reason={c.finish_reason})")
    if c.truncated and truncated == "drop":
        return Drop("truncated", f"answer cut off at the token budget after {c.usage.completion_tokens} tokens")
    if drop_refusals:
        phrase = refusal_phrase(text)
        if phrase:
            return Drop("refusal", f"answer opens with a refusal: {phrase[:120]!r}")
    return None


def _num(x: Any) -> float | None:
    try:
        return round(float(x), 4)
    except (TypeError, ValueError):
        return None


def compact_logprobs(raw: Any, k: int) -> list[list[Any]] | None:
    """[[token, logprob, [[alt, logprob], ...top k]], ...] from what a backend returned.

    Accepts the OpenAI chat shape (a list of {token, logprob, top_logprobs: [{token,
    logprob}]}, or an object with such a `content` list) and the legacy
    completions shape ({tokens, token_logprobs, top_logprobs: [{token: logprob}]}).
    """
    if raw is None:
        return None
    if isinstance(raw, dict) and "content" in raw:
        raw = raw["content"]
    if isinstance(raw, dict) and "tokens" in raw:
        tops = raw.get("top_logprobs") or [None] * len(raw["tokens"])
        raw = [{"token": t, "logprob": lp, "top_logprobs": top}
               for t, lp, top in zip(raw["tokens"], raw.get("token_logprobs") or [], tops)]
    if not isinstance(raw, list):
        return None
    out: list[list[Any]] = []
    for item in raw:
        if not isinstance(item, dict):
            continue
        top = item.get("top_logprobs") or []
        if isinstance(top, dict):
            alts = [[t, _num(lp)] for t, lp in top.items()]
        else:
            alts = [[a.get("token"), _num(a.get("logprob"))] for a in top if isinstance(a, dict)]
        alts.sort(key=lambda a: -(a[1] if a[1] is not None else float("-inf")))
        out.append([item.get("token"), _num(item.get("logprob")), alts[:k]])
    return out
