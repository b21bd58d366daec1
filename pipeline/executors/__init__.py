"""Where shards and phase tasks run: `local` (this process and worker processes) or `ray` (a Ray cluster).

An executor sits under the stages as `ctx.executor`; no stage branches on
which one it is, and no executor imports a stage. Both run the *same* stage
objects over the *same* shards: shard k is the same rows everywhere
(`store.Dataset.plan`), a shard's files are staged under hidden temporary
names wherever it ran, and the driver commits them and writes the done
marker (`runner.run_shards` holds the one loop), so resume, manifests and
atomic writes behave exactly alike (a folder started locally can be
finished on Ray and the other way round). An executor offers:

    map_shards(stage, todo, out, ctx, on_shard) -> manifest extras   per-shard stages
    pool(workers, warm) -> a context manager with workers, imap, map  global stages' phase tasks
    side_teacher(factory) -> SideTeacher                              a teacher besides the run's (score's judge)
    budget(max_tokens, max_seconds, max_rows) -> Budget              a run-wide spend cap (the refresh's night)
    close()

Modules:
    local.py          LocalExecutor, and the process Pool for phase tasks
    ray_executor.py   RayExecutor: worker actors for shards, RayPool for phase tasks
    ray_runtime.py    importing Ray (a one-line install hint without it), connecting
    limits.py         one cluster-wide concurrency / rpm / tpm limiter for the openai backend
    teacher.py        the teacher factory of workers: cluster limiter, llamacpp threads, vLLM replicas

README.md here is the scaling section (Ray launch, overhead, the 10M-row estimate).
A stage that stays in the driver with `ray` says so in its spec (`local_only`),
and `distill run` prints the reason (no silent fallback).
"""

from __future__ import annotations

from typing import Any

from .local import LocalExecutor
from .ray_executor import RayExecutor

EXECUTORS = ("local", "ray")


def make_executor(name: str = "local", address: str | None = None) -> Any:
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address)
    raise ValueError(f"unknown executor {name!r}; use 'local' or 'ray'")
