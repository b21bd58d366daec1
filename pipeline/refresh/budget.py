"""The nightly budget: rows, teacher tokens, wall-clock seconds, and the teacher wrapper that enforces two of them.

`BudgetedTeacher` sits between the response cache and the backend, so cache
hits cost nothing and are always served. It sends requests in waves of
`wave` (the teacher's concurrency) and, before each wave, checks the token
and time limits; once one is reached every further request comes back as a
`budget_exhausted` error without being sent. Stages already treat a failed
completion as a dropped row with its reason, so a budget that runs out
mid-stage leaves every unanswered row accounted for.

The row limit is not enforced here: it caps how many input rows each stage
reads (see refresh/run.py).
"""

from __future__ import annotations

import time
from typing import Any, Callable

from ..teacher.base import ChatRequest, Completion, TeacherError


class Budget:
    def __init__(self, max_rows: int | None = None, max_tokens: int | None = None,
                 max_seconds: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.max_rows, self.max_tokens, self.max_seconds = max_rows, max_tokens, max_seconds
        self.clock = clock
        self.start = clock()
        self.tokens = 0      # prompt + completion tokens of requests actually sent
        self.refused = 0     # requests answered with budget_exhausted instead of being sent
        self.hit: list[str] = []   # limits that ran out, in the order they did

    @property
    def enforced(self) -> bool:
        return self.max_tokens is not None or self.max_seconds is not None

    def elapsed(self) -> float:
        return self.clock() - self.start

    def tokens_left(self) -> int | None:
        return None if self.max_tokens is None else max(self.max_tokens - self.tokens, 0)

    def out_of(self) -> str | None:
        """The limit that is used up now ('tokens' or 'seconds'), if any."""
        if self.max_tokens is not None and self.tokens >= self.max_tokens:
            return "tokens"
        if self.max_seconds is not None and self.elapsed() >= self.max_seconds:
            return "seconds"
        return None

    def note(self, limit: str) -> None:
        if limit not in self.hit:
            self.hit.append(limit)

    @property
    def exhausted(self) -> bool:
        return bool(self.hit)

    def to_dict(self) -> dict[str, Any]:
        return {"max_rows": self.max_rows, "max_tokens": self.max_tokens, "max_seconds": self.max_seconds,
                "tokens_sent": self.tokens, "seconds": round(self.elapsed(), 3),
                "requests_refused": self.refused, "exhausted": self.exhausted, "exhausted_by": list(self.hit)}


class BudgetedTeacher:
    """A Teacher that stops sending once the budget's token or time limit is reached."""

    def __init__(self, inner: Any, budget: Budget, wave: int = 64):
        self.inner = inner
        self.budget = budget
        self.wave = max(int(wave), 1)
        self.backend = inner.backend
        self.model = inner.model
        self.stats = inner.stats
        # The cache hands its on_done through when the backend streams answers.
        self.streams_completions = getattr(inner, "streams_completions", False)

    def _refusal(self, limit: str) -> Completion:
        b = self.budget
        detail = (f"{b.tokens} of {b.max_tokens} tokens spent" if limit == "tokens"
                  else f"{b.elapsed():.0f} of {b.max_seconds:g} seconds used")
        return Completion(text=None, model=self.model, error=TeacherError(
            kind="budget_exhausted", message=f"refresh budget exhausted ({detail}); not sent",
            attempts=0, retryable=False))

    def chat(self, requests: list[ChatRequest], on_done=None) -> list[Completion]:
        b = self.budget
        step = self.wave if b.enforced else max(len(requests), 1)
        out: list[Completion] = []
        for start in range(0, len(requests), step):
            chunk = requests[start:start + step]
            limit = b.out_of()
            if limit is not None:
                b.note(limit)
                for i in range(start, len(requests)):
                    c = self._refusal(limit)
                    out.append(c)
                    if on_done is not None:
                        on_done(i, c)
                b.refused += len(requests) - start
                break
            if self.streams_completions and on_done is not None:
                got = self.inner.chat(chunk, on_done=lambda j, c, s=start: on_done(s + j, c))
            else:
                got = self.inner.chat(chunk)
                if on_done is not None:
                    for j, c in enumerate(got):
                        on_done(start + j, c)
            for c in got:
                if not c.cached:
                    b.tokens += c.usage.prompt_tokens + c.usage.completion_tokens
            out.extend(got)
        return out

    def close(self) -> None:
        self.inner.close()
