"""The in-flight window: up to `size` teacher requests out at once, their replies handed back as they come.

Reads and writes nothing on disk. Each request is its own `teacher.chat` call on a worker thread
(the openai backend overlaps calls from several threads on its one loop, and the response cache
stores each answer as it arrives), so a slow reply holds one slot, never the others. A teacher
whose calls cannot overlap (vLLM's in-process engine) gets one call at a time carrying every
request ready for it. Replies come back on the calling thread, through `take`, in completion
order; putting them back in request order is the caller's business (stage.py's reorder buffer).
"""

from __future__ import annotations

import queue
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Hashable

from ...teacher.base import ChatRequest, Completion


def innermost(teacher: Any) -> Any:
    """The backend under a teacher's layers (breaker, guard, budget, cache)."""
    while getattr(teacher, "inner", None) is not None:
        teacher = teacher.inner
    return teacher


def teacher_concurrency(teacher: Any, default: int = 1) -> int:
    """Requests the teacher keeps in flight: the openai backend's `concurrency`, the embedded
    teacher's client's (two per server child), else `default`."""
    back = innermost(teacher)
    for obj in (back, getattr(back, "client", None)):
        n = getattr(obj, "concurrency", None)
        if isinstance(n, int) and n > 0:
            return n
    return default


def calls_overlap(teacher: Any) -> bool:
    """Whether chat() calls from several threads may run at once (not vLLM's single in-process engine)."""
    return getattr(innermost(teacher), "backend", "") != "vllm"


class Window:
    def __init__(self, teacher: Any, size: int, lanes: int | None = None):
        self.teacher, self.size = teacher, max(1, size)
        self.lanes = max(1, min(lanes or self.size, self.size))
        self.pool = ThreadPoolExecutor(self.lanes, thread_name_prefix="self-instruct-window")
        self.done: queue.Queue[tuple[list[Hashable], Future]] = queue.Queue()
        self.in_flight = 0   # requests sent and not yet taken
        self.calls = 0       # chat() calls running
        self.peak = 0

    def room(self) -> int:
        """Requests that may be sent now."""
        if self.calls >= self.lanes:
            return 0
        return self.size - self.in_flight

    def send(self, items: list[tuple[Hashable, ChatRequest]]) -> None:
        """Send `items` (tag, request); at most `room()` of them."""
        if not items:
            return
        groups = [[it] for it in items] if self.lanes == self.size else [items]
        for group in groups:
            tags = [tag for tag, _ in group]
            fut = self.pool.submit(self.teacher.chat, [req for _, req in group])
            self.in_flight += len(group)
            self.calls += 1
            fut.add_done_callback(lambda f, tags=tags: self.done.put((tags, f)))
        self.peak = max(self.peak, self.in_flight)

    def take(self) -> list[tuple[Hashable, Completion]]:
        """Every reply back so far, at least one (blocks); re-raises what a chat() call raised."""
        got = [self.done.get()]
        while True:
            try:
                got.append(self.done.get_nowait())
            except queue.Empty:
                break
        out: list[tuple[Hashable, Completion]] = []
        error: BaseException | None = None
        for tags, fut in got:
            self.in_flight -= len(tags)
            self.calls -= 1
            try:
                out += list(zip(tags, fut.result()))
            except BaseException as e:  # the first one wins; the others' replies are in the cache
                error = error or e
        if error is not None:
            raise error
        return out

    def close(self) -> None:
        """Wait for the calls in flight (their answers reach the cache), then stop the threads."""
        self.pool.shutdown(wait=True, cancel_futures=True)
