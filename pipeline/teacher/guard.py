"""The length guard: a teacher layer that never sends a request longer than the teacher's context window.

`LengthGuard` wraps a teacher (factory.py: under the budget and the cache).
A request whose estimated prompt tokens (`limits.estimate_tokens`: about four
characters a token) plus its `max_tokens` exceed `context_tokens` comes back
at once as a `too_long` TeacherError, a row-caused failure: the stage records
the row as a drop with that reason, and nothing is sent or paid for. Reads and
writes nothing on disk.
"""

from __future__ import annotations

from typing import Any

from .base import ChatRequest, Completion, OnDone, TeacherError, TeacherLayer
from .limits import estimate_tokens


class LengthGuard(TeacherLayer):
    def __init__(self, inner: Any, context_tokens: int):
        super().__init__(inner)
        self.context_tokens = context_tokens

    def __repr__(self) -> str:
        return f"LengthGuard({self.inner!r}, context_tokens={self.context_tokens})"

    def refusal(self, req: ChatRequest) -> Completion | None:
        est = estimate_tokens(req.messages, req.sampling.max_tokens)
        if est <= self.context_tokens:
            return None
        return Completion(text=None, model=self.model, attempts=0, error=TeacherError(
            "too_long", f"about {est - req.sampling.max_tokens} prompt tokens + max_tokens "
            f"{req.sampling.max_tokens} > the teacher's context of {self.context_tokens} tokens "
            "(teacher.context_tokens); not sent", attempts=0, retryable=False))

    def chat(self, requests: list[ChatRequest], on_done: OnDone | None = None) -> list[Completion]:
        out: list[Completion | None] = [self.refusal(r) for r in requests]
        send = [i for i, c in enumerate(out) if c is None]
        self.stats.requests += len(requests) - len(send)
        self.stats.errors += len(requests) - len(send)
        for i, c in enumerate(out):
            if c is not None and on_done is not None:
                on_done(i, c)
        if send:
            got = self.inner.chat([requests[i] for i in send], on_done=None if on_done is None else
                                  lambda j, c: on_done(send[j], c))
            for i, c in zip(send, got):
                out[i] = c
        return out  # type: ignore[return-value]
