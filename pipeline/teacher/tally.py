"""A per-shard view of the run's teacher that counts what its own completions cost.

The runner hands each shard a `TallyTeacher` around the shared teacher, so a
shard's marker gets its own `teacher_*` counters even while other shards'
requests run at the same time (a before/after difference of the shared
counters would mix them). The counts follow the layers' own counting:
a cache hit is a request and a hit; an answer sent is `attempts` sends,
`attempts - 1` retries and its token usage; an error is an error; a request
the budget refused unsent is not counted (the layers do not count it either).
Reads and writes nothing on disk; `close` leaves the shared teacher open.
"""

from __future__ import annotations

from typing import Any

from .base import MARKED_FAULTS, ChatRequest, Completion, OnDone, TeacherUsage


class TallyTeacher:
    def __init__(self, inner: Any):
        self.inner = inner
        self.backend = inner.backend
        self.model = inner.model
        self.endpoint = getattr(inner, "endpoint", None)
        self.stats = TeacherUsage()

    def __getattr__(self, name: str) -> Any:  # anything else a stage reads is the shared teacher's
        if name.startswith("_") or "inner" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.inner, name)

    def chat(self, requests: list[ChatRequest], on_done: OnDone | None = None) -> list[Completion]:
        # A batch teacher's retries and failures by reason are counted on the teacher, not on completions; its
        # calls never overlap (no `concurrent_calls`), so the growth of its marked faults is this call's.
        shared = getattr(self.inner, "stats", None)
        before = None if shared is None or getattr(self.inner, "concurrent_calls", False) else dict(shared.faults)
        out = self.inner.chat(requests, on_done) if on_done is not None else self.inner.chat(requests)
        for c in out:
            self.count(c)
        if before is not None:
            for k, v in shared.faults.items():
                if k.startswith(MARKED_FAULTS) and v != before.get(k, 0):
                    self.stats.faults[k] = self.stats.faults.get(k, 0) + v - before.get(k, 0)
        return out

    def count(self, c: Completion) -> None:
        s = self.stats
        if c.error is not None and c.error.kind == "budget_exhausted" and c.attempts == 0:
            return
        s.requests += 1
        if c.cached:
            s.cache_hits += 1
            return
        if c.error is not None:
            s.errors += 1
        s.sent += max(c.attempts, 0)
        s.retries += max(c.attempts - 1, 0)
        if c.error is None:
            s.prompt_tokens += c.usage.prompt_tokens
            s.completion_tokens += c.usage.completion_tokens

    def close(self) -> None:
        """The shared teacher is the run's to close."""
