"""Request slots: the teacher's `concurrency`, shared by every `chat` call in flight at once.

The openai backend runs one event loop for all its callers (the runner may
have several shards' `chat` calls open at a time, from threads), and every
request holds one of `n` slots while it is sent (retries and their backoff
included, as before). A freed slot goes to the waiting request with the
lowest priority first: the caller thread's `first_by` rank (the runner sets
its shard index), then the call's order, then first come. So the shard that
is committed next finishes first and a later shard only fills what the
earlier one's tail leaves free. Reads and writes nothing on disk; `Slots` is
loop-bound (use it from the one loop only).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
from contextlib import asynccontextmanager, contextmanager
from typing import Any, AsyncIterator, Iterator

_rank = threading.local()


@contextmanager
def first_by(rank: int) -> Iterator[None]:
    """The `chat` calls this thread makes inside the block wait for slots with `rank` (lower goes first)."""
    old = getattr(_rank, "value", 0)
    _rank.value = rank
    try:
        yield
    finally:
        _rank.value = old


def caller_rank() -> int:
    """The calling thread's `first_by` rank (0 outside one)."""
    return getattr(_rank, "value", 0)


class Slots:
    def __init__(self, n: int):
        self.free = max(int(n), 1)
        self.size = self.free
        self.waiting: list[tuple[Any, int, asyncio.Future]] = []
        self.order = itertools.count()

    @property
    def busy(self) -> int:
        return self.size - self.free

    async def acquire(self, priority: Any) -> None:
        if self.free > 0 and not self.waiting:
            self.free -= 1
            return
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self.waiting, (priority, next(self.order), fut))
        try:
            await fut  # release() hands its slot over: `free` is not incremented for us
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # handed a slot while being cancelled: pass it on
            else:
                self.waiting = [w for w in self.waiting if w[2] is not fut]
                heapq.heapify(self.waiting)
            raise

    def release(self) -> None:
        while self.waiting:
            _, _, fut = heapq.heappop(self.waiting)
            if not fut.done():
                fut.set_result(None)
                return
        self.free += 1

    @asynccontextmanager
    async def hold(self, priority: Any) -> AsyncIterator[None]:
        await self.acquire(priority)
        try:
            yield
        finally:
            self.release()
