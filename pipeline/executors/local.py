"""The local executor: shards in this process, per-block phase tasks on worker processes.

`LocalExecutor.map_shards` runs a per-shard stage's shards here, one after
the other (a teacher-bound stage is concurrent inside its teacher, not
across shards). `LocalExecutor.pool(workers)` is the `map`/`imap` that global
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
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import pyarrow as pa

from ..lifecycle import die_with_parent, started_from_main_thread
from ..runner import process_shard
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
    ordered = True       # shards one after the other, each committed before the next starts
    distributed = False  # everything runs in this process or its worker processes

    def map_shards(self, stage: Any, todo: list[Any], out: Any, ctx: Any,
                   on_shard: Callable[[Any, Any, dict[str, Any]], None]) -> dict[str, Any]:
        """Run `stage` over `todo` here; `on_shard(spec, staged, stats)` commits each. Returns manifest extras."""
        for spec in todo:
            staged, stats = process_shard(stage, spec, out, ctx)
            on_shard(spec, staged, stats)
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
