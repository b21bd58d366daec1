"""The circuit breaker: a teacher layer that stops a stage when the teacher keeps failing.

`BreakerTeacher` wraps a backend (factory.py puts it right around the
backend, under the length guard, budget and cache, so it sees only requests
actually sent). It watches every completion as it arrives (`on_done`) and
counts failures whose cause lies outside the row (`TeacherError.outside`:
auth, connection, timeout, 5xx, protocol). It trips on `consecutive` such
failures in a row, or when more than `rate` of the last `window` requests
failed so (checked once the window is full). A tripped breaker raises
TeacherUnavailable (exit 4) with one line naming the count and the last
error; the requests still in flight are abandoned, and the shard they served
is never marked done. Reads and writes nothing on disk.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from ..errors import TeacherUnavailable
from .base import ChatRequest, Completion, OnDone, TeacherError, TeacherLayer


class Breaker:
    """The counting: `record(error or None)`; `tripped` is the one line, once it trips."""

    def __init__(self, consecutive: int = 50, rate: float = 0.5, window: int = 200):
        self.consecutive, self.rate, self.window = consecutive, rate, window
        self.run = 0                              # outside failures in a row
        self.recent: deque[bool] = deque(maxlen=window)  # True: failed for an outside reason
        self.failed = 0                           # True entries in `recent`, kept as they come and go
        self.last: TeacherError | None = None
        self.tripped: str | None = None

    def record(self, error: TeacherError | None) -> str | None:
        failed = error is not None and error.outside
        if len(self.recent) == self.window:
            self.failed -= self.recent[0]  # about to fall out of the window
        self.recent.append(failed)
        self.failed += failed
        if failed:
            self.run += 1
            self.last = error
        else:
            self.run = 0
        if self.tripped is None:
            if self.consecutive and self.run >= self.consecutive:
                self.tripped = self._line(self.run, self.run)
            elif self.rate < 1 and len(self.recent) == self.window and self.failed > self.rate * self.window:
                self.tripped = self._line(self.failed, self.window)
        return self.tripped

    def _line(self, failed: int, of: int) -> str:
        e = self.last
        why = " ".join(f"{e.kind}: {e.message}".split())[:300] if e is not None else "unknown"
        return (f"teacher failed {failed} of the last {of} requests: {why}; nothing in flight was marked done, "
                "rerun when the teacher is back (`distill teacher ping` checks it)")


class BreakerTeacher(TeacherLayer):
    """A Teacher whose `chat` raises TeacherUnavailable once its `Breaker` trips."""

    def __init__(self, inner: Any, breaker: Breaker):
        super().__init__(inner)
        self.breaker = breaker

    def __repr__(self) -> str:
        return f"BreakerTeacher({self.inner!r})"

    def chat(self, requests: list[ChatRequest], on_done: OnDone | None = None) -> list[Completion]:
        b = self.breaker
        if b.tripped is not None:
            raise TeacherUnavailable(b.tripped)

        def done(i: int, c: Completion) -> None:
            if on_done is not None:
                on_done(i, c)  # first: the cache keeps what did come back
            if b.record(c.error) is not None:
                raise TeacherUnavailable(b.tripped)

        out = self.inner.chat(requests, on_done=done)
        if b.tripped is not None:  # a backend that swallowed the raise
            raise TeacherUnavailable(b.tripped)
        return out
