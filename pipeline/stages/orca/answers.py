"""Checks on the teacher's answers (keep, or drop with a reason) and the compact
form of token logprobs kept for token-level distillation.

`check_answer` returns None to keep an answer, or (reason, detail): the stage
turns that into a rejected row, so a failed answer is never an empty output.
"""

from __future__ import annotations

import re
from typing import Any

from ... import logprobs
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


def compact_logprobs(raw: Any, k: int) -> list[list[Any]] | None:
    """[[token, logprob, [[alt, logprob], ...top k]], ...]: `pipeline.logprobs.compact`, kept here for callers."""
    return logprobs.compact(raw, k)