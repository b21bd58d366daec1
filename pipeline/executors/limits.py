"""One concurrency / rpm / tpm limiter for the whole Ray cluster (openai backend).

Locally, `teacher.concurrency`, `rpm` and `tpm` bound one process. On Ray,
N workers each with the local limits would send N times as much, which is
exactly what a hosted API's rate limit punishes. So the driver starts one
`LimiterActor` per stage run holding the only permits, and every worker's
openai backend (through `ClusterLimiter`, its `Limiter`) acquires a permit
from it before each HTTP attempt and releases it (with the tokens the server
reported) right after:

- concurrency: at most `teacher.concurrency` requests in flight cluster-wide
  (one worker may use every permit while the others are idle);
- rpm / tpm: `limits.WindowLimiter`'s sliding minute, the same rule as locally
  (a token estimate at acquire, corrected to the reported usage at release).

A worker that dies holding permits does not leak them: every permit is a
lease that expires `lease_s` after it was granted (the request timeout plus a
margin; a live holder has released it by then).

`ClusterLimits` is the plain logic (tested with a fake clock); `LimiterActor`
is its asyncio wrapper that Ray runs as an async actor, so waiting acquirers
cost no threads.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..teacher.limits import Entry, WindowLimiter


class ClusterLimits:
    def __init__(self, concurrency: int, rpm: int | None = None, tpm: int | None = None, *,
                 lease_s: float = 150.0, clock: Callable[[], float] = time.monotonic):
        self.concurrency = int(concurrency)
        self.lease_s = lease_s
        self.clock = clock
        self.rpm = WindowLimiter(rpm, clock=clock) if rpm else None
        self.tpm = WindowLimiter(tpm, clock=clock) if tpm else None
        self._leases: dict[int, tuple[float, Entry | None]] = {}
        self._next = 0
        self.granted = 0
        self.expired = 0
        self.max_in_flight = 0

    @property
    def in_flight(self) -> int:
        return len(self._leases)

    def _reap(self, now: float) -> None:
        dead = [t for t, (deadline, _) in self._leases.items() if deadline <= now]
        for t in dead:
            self._leases.pop(t)
            self.expired += 1

    def try_acquire(self, tokens: int = 0) -> tuple[int | None, float]:
        """(ticket, 0) when granted; (None, seconds to wait) when a rate limit says wait;
        (None, 0) when all permits are out (wait for a release)."""
        now = self.clock()
        self._reap(now)
        if len(self._leases) >= self.concurrency:
            return None, 0.0
        wait = max(self.rpm.delay(1) if self.rpm else 0.0, self.tpm.delay(tokens) if self.tpm else 0.0)
        if wait > 0:
            return None, wait
        if self.rpm:
            self.rpm.spend(1)
        entry = self.tpm.spend(tokens) if self.tpm else None
        self._next += 1
        self._leases[self._next] = (now + self.lease_s, entry)
        self.granted += 1
        self.max_in_flight = max(self.max_in_flight, len(self._leases))
        return self._next, 0.0

    def release(self, ticket: int, used_tokens: int | None = None) -> None:
        lease = self._leases.pop(ticket, None)
        if lease is not None and lease[1] is not None and used_tokens is not None:
            self.tpm.correct(lease[1], used_tokens)

    def next_expiry(self) -> float | None:
        """Seconds until the oldest lease expires (when all permits are out)."""
        if not self._leases:
            return None
        return max(min(d for d, _ in self._leases.values()) - self.clock(), 0.0) + 1e-3

    def stats(self) -> dict[str, Any]:
        return {"granted": self.granted, "in_flight": self.in_flight, "max_in_flight": self.max_in_flight,
                "expired_leases": self.expired, "concurrency": self.concurrency}


class LimiterActor:
    """Async wrapper of `ClusterLimits`; started with `ray.remote(...)` by `start_limiter`."""

    def __init__(self, concurrency: int, rpm: int | None, tpm: int | None, lease_s: float):
        self.limits = ClusterLimits(concurrency, rpm, tpm, lease_s=lease_s)
        self._cond: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:  # created inside the actor's event loop
            self._cond = asyncio.Condition()
        return self._cond

    async def acquire(self, tokens: int = 0) -> int:
        cond = self._condition()
        async with cond:
            while True:
                ticket, wait = self.limits.try_acquire(tokens)
                if ticket is not None:
                    return ticket
                timeout = wait if wait > 0 else self.limits.next_expiry()
                try:
                    await asyncio.wait_for(cond.wait(), timeout)
                except asyncio.TimeoutError:
                    pass

    async def release(self, ticket: int, used_tokens: int | None = None) -> None:
        cond = self._condition()
        async with cond:
            self.limits.release(ticket, used_tokens)
            cond.notify_all()

    async def stats(self) -> dict[str, Any]:
        return self.limits.stats()


@dataclass(frozen=True)
class ClusterLimiter:
    """The `Limiter` (teacher/limits.py) of every worker's openai backend: the run's one actor."""

    actor: Any          # a LimiterActor handle
    needs_tokens: bool  # the section has a tpm

    async def acquire(self, tokens: int) -> int:
        return await self.actor.acquire.remote(tokens)

    def release(self, ticket: int, used: int) -> None:
        self.actor.release.remote(ticket, used)


def start_limiter(ray, section) -> ClusterLimiter:
    """The cluster-wide limiter for one stage run, from the [teacher] section; `stop_limiter` ends it."""
    lease = float(section.timeout_s) + 30.0
    actor = ray.remote(num_cpus=0, max_concurrency=100_000)(LimiterActor)
    return ClusterLimiter(actor.remote(section.concurrency, section.rpm, section.tpm, lease), section.tpm is not None)


def stop_limiter(ray, limiter: ClusterLimiter, graceful: bool = True) -> dict[str, Any] | None:
    """Its stats (when `graceful`), then the actor is killed."""
    stats = None
    try:
        if graceful:
            stats = ray.get(limiter.actor.stats.remote(), timeout=30)
    except Exception:  # best effort, as closing the workers is
        pass
    ray.kill(limiter.actor, no_restart=True)
    return stats
