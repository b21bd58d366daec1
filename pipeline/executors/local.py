"""The local executor: shards in this process, per-block phase tasks on worker processes.

`LocalExecutor.map_shards` runs a per-shard stage's shards here: one after
the other, or with `lookahead` up to 1 + lookahead shards at once on
threads (`overlapped`), so a teacher-bound stage's next shard fills the
teacher's window while the previous one's slowest answers finish (the
teacher's own concurrency caps the requests of all of them together); each
shard is still handed to `on_shard` (committed) in order. `LocalExecutor.pool(workers)` is the `map`/`imap` that global
stages (MinHash) hand their per-block tasks to: worker processes, and the
calling process works too.

Processes rather than threads: the per-block work mixes compiled kernels with
Arrow/Parquet calls and Python glue, and separate processes keep every part of
it parallel. `spawn` (not fork) because the parent may hold Arrow thread
pools and locks. With W workers the calling process is one of them and W - 1
are spawned, started (and warmed: imports, numba cache) as soon as the pool
opens, so their start-up overlaps with the work the caller already does.
Workers die with the calling process (pipeline.lifecycle), so a killed
`distill minhash` leaves none behind.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import pyarrow as pa

from ..lifecycle import die_with_parent, started_from_main_thread
from ..runner import compute_shard, process_shard, stage_result
from ..teacher.budget import Budget


def _warm(warm: Callable[[], Any] | None) -> int:
    pa.set_cpu_count(1)  # parallelism is across processes; Arrow threads would only contend
    if warm is not None:
        warm()  # the caller's imports and compiled kernels, loaded while the caller starts
    return os.getpid()


@dataclass
class SideTeacher:
    """What a stage gets for a teacher other than the run's: a live one, or a factory its workers build from."""

    teacher: Any = None
    factory: Any = None
    info: dict[str, Any] = field(default_factory=dict)  # backend and model, for the manifest


class LocalExecutor:
    name = "local"
    ordered = True       # shards committed in order (with lookahead 0, each before the next starts)
    distributed = False  # everything runs in this process or its worker processes

    def map_shards(self, stage: Any, todo: list[Any], out: Any, ctx: Any,
                   on_shard: Callable[[Any, Any, dict[str, Any]], None], lookahead: int = 0) -> dict[str, Any]:
        """Run `stage` over `todo` here; `on_shard(spec, staged, stats)` commits each, in order.
        `lookahead`: shards started ahead of the next one to commit. Returns manifest extras."""
        if lookahead <= 0 or len(todo) <= 1:
            for spec in todo:
                staged, stats = process_shard(stage, spec, out, ctx)
                on_shard(spec, staged, stats)
            return {}
        # staged only when its turn to commit comes: a kill leaves no files of shards that wait their turn
        overlapped(todo, lambda spec: compute_shard(stage, spec, ctx),
                   lambda spec, res: on_shard(spec, *stage_result(stage, spec, out, *res)), lookahead)
        return {}

    def pool(self, workers: int, warm: Callable[[], Any] | None = None) -> "Pool":
        return Pool(workers, warm)

    def model_pool(self, use_gpus: bool = False) -> None:
        """Tasks that load a model run here, with the model the caller already loaded."""
        return None

    def budget(self, max_tokens: int | None = None, *, max_seconds: float | None = None,
               max_rows: int | None = None) -> Budget:
        """A spend cap for the run (the refresh's night), counted in this process."""
        return Budget(max_tokens, max_seconds=max_seconds, max_rows=max_rows)

    @contextmanager
    def side_teacher(self, factory: Any) -> Iterator[SideTeacher]:
        """A teacher other than the run's (score's judge), built here for the block and closed after."""
        teacher = factory.build()
        try:
            yield SideTeacher(teacher=teacher, info={"backend": teacher.backend, "model": teacher.model})
        finally:
            teacher.close()

    def close(self) -> None:
        pass


def overlapped(todo: list[Any], work: Callable[[Any], Any], deliver: Callable[[Any, Any], None],
               lookahead: int) -> None:
    """`work(item)` for every item of `todo` on threads, at most 1 + `lookahead` items started and not yet
    delivered; `deliver(item, result)` here, in `todo` order (a reorder buffer).

    An item that raises: no new item starts, the ones started are waited for and the others delivered,
    then the first exception (in `todo` order) is raised; what was delivered stays delivered (a rerun
    resumes after it, as without overlap). An exception in `deliver` (or Ctrl-C) is raised at once: the
    threads are daemons and their staged files are temporaries the next run clears."""
    done: dict[int, tuple[bool, Any]] = {}
    cond = threading.Condition()

    def run(pos: int, item: Any) -> None:
        try:
            res = (True, work(item))
        except BaseException as e:  # re-raised by the delivering thread, in order
            res = (False, e)
        with cond:
            done[pos] = res
            cond.notify_all()

    started = nxt = 0
    error: BaseException | None = None
    while nxt < started or (error is None and nxt < len(todo)):
        with cond:
            while error is None and started < len(todo) and started <= nxt + lookahead:
                threading.Thread(target=run, args=(started, todo[started]), daemon=True,
                                 name=f"shard-{started}").start()
                started += 1
            while nxt not in done:
                cond.wait()
            ok, res = done.pop(nxt)
        item, nxt = todo[nxt], nxt + 1
        if not ok:
            error = error or res
        else:
            deliver(item, res)
    if error is not None:
        raise error


class Pool:
    def __init__(self, workers: int, warm: Callable[[], Any] | None = None):
        self.workers = max(1, min(workers, os.cpu_count() or 1))
        self._ex: ProcessPoolExecutor | None = None
        if self.workers > 1:
            self._ex = ProcessPoolExecutor(max_workers=self.workers - 1,
                                           mp_context=multiprocessing.get_context("spawn"),
                                           initializer=die_with_parent,
                                           initargs=(os.getpid(), started_from_main_thread()))
            for _ in range(self.workers - 1):
                self._ex.submit(_warm, warm)

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._ex is not None:
            self._ex.shutdown(wait=True, cancel_futures=True)
            self._ex = None

    def imap(self, fn: Callable[[dict], dict], tasks: list[dict]) -> Iterator[dict]:
        """Results in task order. Spawned workers take tasks while the caller runs the others."""
        if self._ex is None or len(tasks) <= 1:
            for t in tasks:
                yield fn(t)
            return
        queue = deque(enumerate(tasks))
        running: dict[Future, int] = {}
        done: dict[int, dict] = {}
        nxt = 0
        while queue or running:
            while queue and len(running) < self.workers - 1:
                i, t = queue.popleft()
                running[self._ex.submit(fn, t)] = i
            if queue:  # the caller works too
                i, t = queue.pop()  # from the end: the workers go from the front
                done[i] = fn(t)
            else:
                wait(list(running), return_when=FIRST_COMPLETED)
            for f in [f for f in running if f.done()]:
                done[running.pop(f)] = f.result()
            while nxt in done:
                yield done.pop(nxt)
                nxt += 1
        while nxt in done:
            yield done.pop(nxt)
            nxt += 1

    def map(self, fn: Callable[[dict], dict], tasks: list[dict]) -> list[dict]:
        return list(self.imap(fn, tasks))
