"""Requests-per-minute and tokens-per-minute limits, and retry backoff.

A `Limiter` is what the openai backend asks before each HTTP attempt
(`acquire(estimated tokens) -> ticket`) and tells after it (`release(ticket,
tokens used)`). `LocalLimiter` holds one process's `teacher.rpm` / `tpm`;
on Ray, executors/limits.py's `ClusterLimiter` holds the whole cluster's.

A sliding one-minute window: a send is allowed when the amount used in the
last 60 seconds plus this one stays within the limit (a single request larger
than the whole limit is let through alone, otherwise it would wait forever).
Token use is first estimated (prompt characters / 4 + max_tokens) and then
corrected to the `usage` the server reports, so a stage with short answers is
not throttled by its max_tokens.

The clock is injectable so the limiter is tested without sleeping.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from email.utils import parsedate_to_datetime
from typing import Any, Awaitable, Callable, Protocol

WINDOW_S = 60.0


class Entry:
    __slots__ = ("t", "amount", "alive")

    def __init__(self, t: float, amount: float):
        self.t = t
        self.amount = amount
        self.alive = True


class WindowLimiter:
    def __init__(self, limit: float, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic):
        self.limit = float(limit)
        self.window_s = window_s
        self.clock = clock
        self._entries: deque[Entry] = deque()
        self._used = 0.0

    def _expire(self, now: float) -> None:
        while self._entries and self._entries[0].t <= now - self.window_s:
            e = self._entries.popleft()
            e.alive = False
            self._used -= e.amount

    def delay(self, amount: float) -> float:
        """Seconds to wait before `amount` may be spent (0 when it may be spent now)."""
        now = self.clock()
        self._expire(now)
        if self._used + amount <= self.limit or not self._entries:
            return 0.0
        # Wait until enough of the oldest entries leave the window.
        need = self._used + amount - self.limit
        freed = 0.0
        for e in self._entries:
            freed += e.amount
            if freed >= need:
                return max(e.t + self.window_s - now, 0.0) + 1e-3
        return max(self._entries[-1].t + self.window_s - now, 0.0) + 1e-3

    def spend(self, amount: float) -> Entry:
        e = Entry(self.clock(), amount)
        self._entries.append(e)
        self._used += amount
        return e

    def correct(self, entry: Entry, actual: float) -> None:
        """Replace an estimate by the amount actually used (if still in the window)."""
        if entry.alive:
            self._used += actual - entry.amount
        entry.amount = actual

    @property
    def used(self) -> float:
        self._expire(self.clock())
        return self._used


class Limiter(Protocol):
    needs_tokens: bool  # acquire wants a token estimate (a tpm limit); else it is passed 0

    async def acquire(self, tokens: int) -> Any: ...

    def release(self, ticket: Any, used: int) -> None: ...


class LocalLimiter:
    """`teacher.rpm` and `teacher.tpm` of one process: waits (on `sleep`) until the window has room."""

    def __init__(self, rpm: int | None = None, tpm: int | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep):
        self.rpm = WindowLimiter(rpm, clock=clock) if rpm else None
        self.tpm = WindowLimiter(tpm, clock=clock) if tpm else None
        self.needs_tokens = self.tpm is not None
        self.sleep = sleep

    @classmethod
    def of(cls, section) -> "LocalLimiter | None":
        return cls(section.rpm, section.tpm) if section.rpm or section.tpm else None

    async def acquire(self, tokens: int) -> Entry | None:
        while self.rpm is not None and (d := self.rpm.delay(1)) > 0:
            await self.sleep(d)
        while self.tpm is not None and (d := self.tpm.delay(tokens)) > 0:
            await self.sleep(d)
        if self.rpm is not None:
            self.rpm.spend(1)
        return self.tpm.spend(tokens) if self.tpm is not None else None

    def release(self, ticket: Entry | None, used: int) -> None:
        if ticket is not None:
            self.tpm.correct(ticket, used)


def estimate_tokens(messages, max_tokens: int) -> int:
    chars = sum(len(m.get("content") or "") for m in messages)
    return chars // 4 + 8 * len(messages) + max_tokens


def parse_retry_after(headers) -> float | None:
    """Seconds from `retry-after-ms` or `Retry-After` (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError, IndexError):
        return None


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random,
                  retry_after: float | None = None) -> float:
    """Full-jitter exponential backoff; a server's Retry-After is a floor, not a suggestion."""
    delay = rng.uniform(0, min(cap, base * (2 ** attempt)))
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay
