"""The one retry of an answer cut off by its budget, and the budget that fits the teacher's window.

Reads the teacher's context window from the run context (`teacher.context_tokens`, see factory.py);
writes nothing. An answering stage (Evol-Instruct, Orca) asks with `fit_budget` (its configured
budget lowered to what the window leaves after the prompt, so a long prompt is not refused as
`too_long` only because of the budget), then hands the completions to `retry_truncated`: every answer
cut off by its budget is asked once more with a larger one (default 2 x, capped by the window). The
papers do not retry; docs/DEPARTURES.md lists it.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any, Callable

from ..truncation import count
from .base import ChatRequest, Completion
from .factory import context_tokens
from .limits import estimate_tokens


def context_window(ctx: Any) -> int | None:
    """The teacher's context window in tokens, when the run's teacher is built from a config section."""
    section = getattr(ctx.teacher_factory, "section", None)
    if section is None:
        return None
    return context_tokens(section)


def room(req: ChatRequest, window: int | None) -> int | None:
    """Completion tokens the window leaves after `req`'s prompt (the length guard's estimate)."""
    return None if window is None else window - estimate_tokens(req.messages, 0)


def fit_budget(req: ChatRequest, window: int | None) -> ChatRequest:
    """`req` with max_tokens lowered to the window's room; unchanged when it fits, or when the prompt
    alone fills the window (the length guard then refuses it as too_long, a recorded drop)."""
    left = room(req, window)
    if left is None or left < 1 or req.sampling.max_tokens <= left:
        return req
    return dataclasses.replace(req, sampling=dataclasses.replace(req.sampling, max_tokens=left))


def retry_max_tokens(first: int, configured: int | None, left: int | None) -> int | None:
    """The retry's budget: `configured`, else 2 x `first`; capped by the window's room. None when that is
    no larger than `first` (a retry could only be cut off again)."""
    want = configured if configured else 2 * first
    if left is not None:
        want = min(want, left)
    return want if want > first else None


def retry_truncated(chat: Callable[[list[ChatRequest]], list[Completion]], window: int | None,
                    reqs: list[ChatRequest], comps: list[Completion], *, enabled: bool, max_tokens: int | None,
                    stats: Counter) -> tuple[list[ChatRequest], list[list[Completion]]]:
    """Ask every cut-off answer of `comps` (the replies to `reqs`) once more with a larger budget, in one
    `chat` call; `window` is `context_window(ctx)`.

    Returns the requests as finally sent and each row's attempts (first, then the retry if any). Counts
    `truncation_*` into `stats` for the answered rows (those with text)."""
    reqs = list(reqs)
    attempts = [[c] for c in comps]
    retry: list[tuple[int, ChatRequest]] = []
    for i, (req, c) in enumerate(zip(reqs, comps)):
        if not (enabled and c.ok and c.truncated):
            continue
        budget = retry_max_tokens(req.sampling.max_tokens, max_tokens, room(req, window))
        if budget is not None:
            retry.append((i, dataclasses.replace(req, sampling=dataclasses.replace(req.sampling, max_tokens=budget))))
    if retry:
        for (i, req), c in zip(retry, chat([r for _, r in retry])):
            attempts[i].append(c)
            if not c.unanswered:  # an outside failure leaves the row unanswered: its first request is asked again
                reqs[i] = req
    count(attempts, stats)
    return reqs, attempts
