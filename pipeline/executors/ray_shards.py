"""`run_shards` on Ray: the same per-shard stage, its shards as tasks of a pool of worker actors.

Driver (this process): opens the output folder exactly as the local runner
does (same `_plan.json`, so a folder can be started on one executor and
resumed on the other), plans the shards from Parquet metadata, skips those
with a done marker, and hands the rest to worker actors, at most two queued
per actor. As each shard's result comes back the driver renames the staged
files into place and writes the done marker; the manifest is written last.

Worker (a Ray actor): holds one copy of the stage and of the StageContext
(its teacher is built lazily from the picklable factory, once per actor),
reads its shard's rows itself, runs `stage.process`, and stages kept and
rejected rows under hidden temporary names.

Failures:
- a worker process that dies mid-shard (os._exit, OOM kill, lost node): Ray
  restarts the actor and re-runs the shard (`max_restarts`/`max_task_retries`);
  the dead attempt left only hidden temporaries, so the shard is written once;
- an exception in `stage.process` (a bug, TeacherUnavailable): not retried.
  The driver stops submitting, commits the shards other workers finish, then
  raises the stage's own exception (the CLI prints its one line); a rerun
  resumes at the unfinished shards, as locally.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from typing import Any, Iterator

from ..runner import (
    Progress,
    ShardResult,
    StageContext,
    _check_accounting,
    teacher_usage,
)
from . import storage
from .folders import ShardFolder, stage_shard
from .ray_runtime import connect, task_error_cause
from .shards import ShardSpec, plan_shards, read_rows
from .teacher import actor_options, worker_factory

QUEUE_PER_WORKER = 2  # one running, one waiting: the worker never idles while the driver commits


class ShardWorker:
    """One Ray actor: a stage and its context, over many shards.

    The (stage, context) pair comes with every call as a boxed object ref and
    is unpacked once: a restarted actor (after its process died) gets it again
    with the retried call, and the driver, which holds the ref, keeps it alive.
    """

    def __init__(self, out: storage.Location):
        self.out = out
        self.stage: Any = None
        self.ctx: StageContext | None = None

    def run(self, spec: ShardSpec, box: list[Any]) -> dict[str, Any]:
        if self.stage is None:
            import ray
            self.stage, self.ctx = ray.get(box[0])
        rows = read_rows(spec)
        before = teacher_usage(self.ctx)
        ts = time.monotonic()
        result: ShardResult = self.stage.process(rows, self.ctx)
        stats: dict[str, Any] = {"rows_in": len(rows), "seconds": round(time.monotonic() - ts, 3)}
        if (after := teacher_usage(self.ctx)) is not None:
            stats.update(after.delta(before).marker())
        for k, v in result.stats.items():
            stats[k] = stats.get(k, 0) + v
        _check_accounting(self.stage.name, rows, result)
        staged = stage_shard(self.out, spec.index, result.kept, result.rejected, stage=self.stage.name)
        teacher = None
        if self.ctx.has_teacher:
            teacher = {"backend": self.ctx.teacher.backend, "model": self.ctx.teacher.model}
        return {"staged": staged, "stats": stats, "teacher": teacher}

    def close(self) -> None:
        if self.ctx is not None:
            self.ctx.close()  # flushes the response cache, frees the engine


class WorkerPool:
    """The actors of one stage run, plus the openai limiter when the teacher needs one."""

    def __init__(self, ray, stage: Any, ctx: StageContext, out: storage.Location, *, n_shards: int,
                 workers: int | None = None, max_restarts: int = 3):
        self.ray = ray
        self.max_restarts = max_restarts
        factory, plan, self.stop_teacher = worker_factory(
            ray, ctx.teacher_factory, ray.cluster_resources(), workers, getattr(stage, "needs_teacher", True))
        wctx = dataclasses.replace(ctx, _teacher=None, progress=False, teacher_factory=factory)
        plan = plan[:max(n_shards, 1)]
        try:  # fail here with the stage's name, not inside a worker
            self.box = [ray.put((stage, wctx))]
        except Exception as e:  # cloudpickle raises several types
            raise TypeError(f"stage {getattr(stage, 'name', stage)!r} cannot be sent to Ray workers: {e}") from e
        actor = ray.remote(ShardWorker)
        self.actors = [actor.options(max_restarts=max_restarts, max_task_retries=max_restarts,
                                     **actor_options(ray, o)).remote(out) for o in plan]

    def run(self, todo: list[ShardSpec]) -> Iterator[tuple[ShardSpec, dict[str, Any]]]:
        """(spec, result) as shards finish; the first stage error is raised after the others drain."""
        ray = self.ray
        queue = deque(todo)
        inflight: dict[Any, tuple[ShardSpec, int]] = {}
        load = [0] * len(self.actors)
        error: BaseException | None = None
        while inflight or (queue and error is None):
            while queue and error is None:
                i = min(range(len(load)), key=load.__getitem__)
                if load[i] >= QUEUE_PER_WORKER:
                    break
                spec = queue.popleft()
                inflight[self.actors[i].run.remote(spec, self.box)] = (spec, i)
                load[i] += 1
            ready, _ = ray.wait(list(inflight), num_returns=1)
            for ref in ready:
                spec, i = inflight.pop(ref)
                load[i] -= 1
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayTaskError as e:
                    error = error or _with_cause(e)
                    continue
                except ray.exceptions.RayActorError as e:
                    error = error or RuntimeError(
                        f"shard {spec.index}: its worker died {self.max_restarts + 1} times "
                        f"(out of memory? see the Ray logs): {str(e).splitlines()[0]}")
                    continue
                yield spec, result
        if error is not None:
            raise error

    def shutdown(self, graceful: bool) -> dict[str, Any] | None:
        """Closes and ends the workers, then the teacher's limiter; returns the limiter's stats."""
        ray = self.ray
        if graceful:
            try:
                ray.get([a.close.remote() for a in self.actors], timeout=120)
            except Exception:  # closing is best effort: the caches commit after every chat()
                pass
        for a in self.actors:
            ray.kill(a, no_restart=True)
        return self.stop_teacher(graceful)


def _with_cause(e: BaseException) -> BaseException:
    cause = task_error_cause(e)
    if cause is not e:
        cause.__cause__ = e  # the remote traceback, for --debug
    return cause


def run_shards_ray(stage: Any, input_ds: Any, out: Any, ctx: StageContext, *, shard_rows: int = 1000,
                   limit: int | None = None, manifest_extra: dict[str, Any] | None = None,
                   workers: int | None = None, max_restarts: int = 3,
                   plan: dict[str, Any] | None = None) -> dict[str, Any]:
    """`runner.run_shards` with the shards as Ray tasks; same folder, markers and manifest.

    `plan` replaces the folder's resume plan (a stage that also writes the
    folder itself, like Evol-Instruct's rounds, passes its own)."""
    ray = connect(ctx.ray_address)
    settings = stage.settings()
    folder = ShardFolder(out, stage.name, plan=plan or {
        "input": str(input_ds.path), "shard_rows": shard_rows, "limit": limit, "settings": settings})
    specs = plan_shards(storage.dataset_files(input_ds), shard_rows, limit)
    bar = Progress(sum(s.rows for s in specs), stage.name, ctx.progress)
    t0 = time.monotonic()
    todo = []
    for spec in specs:
        if folder.is_done(spec.index):
            bar.update(spec.rows)
        else:
            todo.append(spec)
    skipped = len(specs) - len(todo)
    teacher: dict[str, Any] | None = None
    pool: WorkerPool | None = None
    limiter_stats = None
    ok = False
    try:
        if todo:
            pool = WorkerPool(ray, stage, ctx, folder.loc, n_shards=len(todo), workers=workers,
                              max_restarts=max_restarts)
            for spec, res in pool.run(todo):
                stats = folder.commit_shard(res["staged"], res["stats"])
                teacher = teacher or res["teacher"]
                bar.update(spec.rows, errors=stats.get("teacher_errors", 0),
                           tokens=stats.get("teacher_completion_tokens", 0))
        ok = True
    finally:
        bar.close()
        if pool is not None:
            limiter_stats = pool.shutdown(graceful=ok)
        folder.clean_temporaries()
    extra: dict[str, Any] = {
        "run_id": ctx.run_id,
        "input": str(input_ds.path),
        "settings": settings,
        "shard_rows": shard_rows,
        "limit": limit,
        "shards_skipped_on_resume": skipped,
        "wall_seconds_this_invocation": round(time.monotonic() - t0, 3),
        "executor": "ray",
        "ray_workers": len(pool.actors) if pool else 0,
    }
    if teacher is None and ctx.has_teacher:
        teacher = {"backend": ctx.teacher.backend, "model": ctx.teacher.model}
    if teacher is not None:
        extra["teacher"] = teacher
    if limiter_stats:
        extra["teacher_cluster_limits"] = limiter_stats
    extra.update(manifest_extra or {})
    return folder.write_manifest(**extra)
