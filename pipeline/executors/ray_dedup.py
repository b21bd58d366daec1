"""MinHash on Ray: the stage's per-block and per-band tasks as Ray tasks (and semdedup's embed tasks).

MinHash (`pipeline/stages/minhash/`) already runs as explicit phases whose
per-block work is a module-level function over one picklable task dict that
writes its files (temporary name, rename, done marker) under `<out>/_work/`:

    signatures  one task per block: signatures, band keys, tie hashes       (map)
    candidates  one task per group of bands: that band's keys from every     (the reduce,
                block, sorted; runs of equal keys -> candidate pairs          keyed by band)
    verify      one task per block: shingle sets of candidate rows; the pairs are checked in the driver
    clusters    union-find and keep decisions in the driver (one pass over the verified pairs)
    filter      one task per block: output shard k, rejected/ shard k

`RayPool` is `minhash.pool.Pool`'s interface (`workers`, `imap`, `map`) with
each task a Ray task, so the stage code, its files and therefore its results
are identical to the local executor's; only where the functions run changes.
The band-key grouping is a shuffle through the shared work folder: every map
task writes its block's keys band-major, every reduce task memory-maps one
band's slice of every block. On a multi-node cluster `<out>` must therefore
be on a filesystem every node mounts (NFS, a parallel FS); the phase files
are numpy arrays on paths.

A task whose worker dies is retried by Ray (`max_retries`); the phase
functions are idempotent (a rerun rewrites the same files), so a retry can
neither duplicate nor lose a row. An exception inside a task is not retried
and is raised as itself.

Semdedup's embed phase runs its `embed_chunk` tasks through the same pool,
one GPU each where the cluster has GPUs (`num_gpus`).
"""

from __future__ import annotations

import contextlib
from collections import deque
from itertools import islice
from typing import Any, Callable, Iterator

from .ray_runtime import connect, task_error_cause


class RayPool:
    """`pipeline.stages.minhash.pool.Pool` over Ray tasks: results in task order."""

    def __init__(self, address: str | None = None, workers: int | None = None, *, max_retries: int = 3,
                 num_cpus: float = 1, num_gpus: float = 0):
        self.ray = connect(address)
        self.workers = workers or max(int(self.ray.cluster_resources().get("CPU", 1)), 1)
        self.max_retries = max_retries
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        self._pending: deque = deque()

    def __enter__(self) -> "RayPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._cancel()

    def _cancel(self) -> None:
        while self._pending:
            with contextlib.suppress(Exception):
                self.ray.cancel(self._pending.popleft(), force=True)

    def imap(self, fn: Callable[[dict], dict], tasks: list[dict]) -> Iterator[dict]:
        ray = self.ray
        # Ray ends a GPU task's worker after one call unless told otherwise (max_calls=1);
        # max_calls=0 keeps it, and with it what the process loaded (an embedding model).
        gpu = {"num_gpus": self.num_gpus, "max_calls": 0} if self.num_gpus else {}
        remote = ray.remote(num_cpus=self.num_cpus, max_retries=self.max_retries, **gpu)(fn)
        todo = iter(tasks)
        window = 2 * self.workers  # queued ahead so no worker waits on the driver
        self._pending.extend(remote.remote(t) for t in islice(todo, window))
        while self._pending:
            ref = self._pending.popleft()
            try:
                result = ray.get(ref)
            except ray.exceptions.RayTaskError as e:
                self._cancel()
                cause = task_error_cause(e)
                raise cause from e
            nxt = next(todo, None)
            if nxt is not None:
                self._pending.append(remote.remote(nxt))
            yield result

    def map(self, fn: Callable[[dict], dict], tasks: list[dict]) -> list[dict]:
        return list(self.imap(fn, tasks))


def run_minhash_ray(input: Any, out: Any, config: Any = None, *, ray_address: str | None = None,
                    workers: int | None = None, **kwargs: Any) -> dict[str, Any]:
    """`run_minhash` with its per-block and per-band phases on Ray (its `pool` hook).

    `workers`: tasks in flight, default every CPU of the cluster (the
    `[minhash] workers` setting counts local processes and is not used here).
    """
    from ..stages.minhash.stage import run_minhash

    return run_minhash(input, out, config, pool=RayPool(ray_address, workers), **kwargs)
