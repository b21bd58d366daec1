"""The Ray executor: the same stages over the same shards and tasks, on a Ray cluster.

Per-shard stages (`map_shards`): the driver (this process) plans and commits
exactly as with the local executor (`runner.run_shards` holds the loop, so a
folder started on one executor can be resumed on the other); the shards it
hands out run on a pool of worker actors, at most two queued per actor.
Each worker holds one copy of the stage and of the run context (its teacher
is built lazily from the picklable factory, once per actor), reads its
shard's rows itself, runs `stage.process`, and stages kept and rejected rows
under hidden temporary names (store.stage_shard); the driver renames them
into place and writes the done marker as each result comes back.

Global stages' per-block tasks (`pool(workers)`): `RayPool` has the local
pool's interface (`workers`, `imap`, `map`) with each task a Ray task, so a
phase's code, its files and therefore its results are identical to the local
executor's; only where the functions run changes. MinHash's band-key grouping
is a shuffle through the shared work folder, so on a multi-node cluster the
output must be on a filesystem every node mounts (NFS, a parallel FS).

Failures:
- a worker process that dies mid-shard (os._exit, OOM kill, lost node): Ray
  restarts the actor and re-runs the shard (`max_restarts`/`max_task_retries`);
  the dead attempt left only hidden temporaries, so the shard is written once.
  A task whose worker dies is retried (`max_retries`); phase tasks are
  idempotent (a rerun rewrites the same files);
- an exception in `stage.process` or a task (a bug, TeacherUnavailable): not
  retried. The driver stops submitting, commits the shards other workers
  finish, then raises the stage's own exception (the CLI prints its one
  line); a rerun resumes at the unfinished shards, as locally.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import deque
from contextlib import contextmanager
from itertools import islice
from typing import Any, Callable, Iterator

from ..runner import process_shard
from ..store import Location, ShardSpec
from ..teacher.budget import Budget
from .local import SideTeacher
from .ray_runtime import connect, require_ray, task_error_cause
from .teacher import actor_options, worker_factory, worker_judge


class RayExecutor:
    name = "ray"
    ordered = False      # shards in parallel, committed as they finish
    distributed = True

    def __init__(self, address: str | None = None, workers: int | None = None, max_restarts: int = 3):
        require_ray()  # the one-line install hint before any work
        self.address = address
        self.workers = workers
        self.max_restarts = max_restarts

    def map_shards(self, stage: Any, todo: list[ShardSpec], out: Location, ctx: Any,
                   on_shard: Callable[[ShardSpec, Any, dict[str, Any]], None], lookahead: int = 0) -> dict[str, Any]:
        """Run `stage` over `todo` on worker actors; `on_shard(spec, staged, stats)` commits each.
        `lookahead` is the local executor's; here the actors' queues keep the shards overlapping."""
        ray = connect(self.address)
        extra: dict[str, Any] = {"executor": "ray", "ray_workers": 0}
        if not todo:
            return extra
        pool = WorkerPool(ray, stage, ctx, out, n_shards=len(todo), workers=self.workers,
                          max_restarts=self.max_restarts)
        extra["ray_workers"] = len(pool.actors)
        ok = False
        try:
            for spec, res in pool.run(todo):
                on_shard(spec, res["staged"], res["stats"])
                if res["teacher"] and "teacher" not in extra:
                    extra["teacher"] = res["teacher"]
            ok = True
        finally:
            limiter_stats = pool.shutdown(graceful=ok)
        if limiter_stats:
            extra["teacher_cluster_limits"] = limiter_stats
        return extra

    def pool(self, workers: int | None = None, warm: Callable[[], Any] | None = None) -> "RayPool":
        """Phase tasks on Ray, as many in flight as this executor was given (default every CPU of the
        cluster). `workers` is the stage's count of local processes and does not apply here; `warm`
        is not needed (Ray keeps warm worker processes)."""
        return RayPool(self.address, self.workers)

    def model_pool(self, use_gpus: bool = False) -> "RayPool":
        """Tasks that load a model once per worker: one per GPU where the cluster has GPUs (and
        `use_gpus`), else one per CPU."""
        gpus = int(connect(self.address).cluster_resources().get("GPU", 0)) if use_gpus else 0
        return RayPool(self.address, gpus or None, num_gpus=1 if gpus else 0)

    def budget(self, max_tokens: int | None = None, *, max_seconds: float | None = None,
               max_rows: int | None = None) -> Budget:
        """A spend cap whose ledger is a Ray actor: every worker's copy draws on the same counts."""
        return Budget.on_ray(connect(self.address), max_tokens, max_seconds, max_rows=max_rows)

    @contextmanager
    def side_teacher(self, factory: Any) -> Iterator[SideTeacher]:
        """A teacher other than the run's (score's judge): each worker builds its own from the factory."""
        with worker_judge(factory, self.address) as f:
            yield SideTeacher(factory=f, info={"backend": f.section.backend, "model": f.section.model})

    def close(self) -> None:
        pass  # a cluster this process started lives until it exits (ray_runtime.connect)


QUEUE_PER_WORKER = 2  # one running, one waiting: the worker never idles while the driver commits


class ShardWorker:
    """One Ray actor: a stage and its context, over many shards.

    The (stage, context) pair comes with every call as a boxed object ref and
    is unpacked once: a restarted actor (after its process died) gets it again
    with the retried call, and the driver, which holds the ref, keeps it alive.
    """

    def __init__(self, out: Location):
        self.out = out
        self.stage: Any = None
        self.ctx: Any = None

    def run(self, spec: ShardSpec, box: list[Any]) -> dict[str, Any]:
        if self.stage is None:
            import ray
            self.stage, self.ctx = ray.get(box[0])
        staged, stats = process_shard(self.stage, spec, self.out, self.ctx)
        teacher = None
        if self.ctx.has_teacher:
            teacher = {"backend": self.ctx.teacher.backend, "model": self.ctx.teacher.model}
        return {"staged": staged, "stats": stats, "teacher": teacher}

    def close(self) -> None:
        if self.ctx is not None:
            self.ctx.close()  # flushes the response cache, frees the engine


class WorkerPool:
    """The actors of one stage run, plus the openai limiter when the teacher needs one."""

    def __init__(self, ray, stage: Any, ctx: Any, out: Location, *, n_shards: int,
                 workers: int | None = None, max_restarts: int = 3):
        self.ray = ray
        self.max_restarts = max_restarts
        factory, plan, self.stop_teacher = worker_factory(
            ray, ctx.teacher_factory, ray.cluster_resources(), workers, getattr(stage, "needs_teacher", True))
        wctx = dataclasses.replace(ctx.for_worker(), teacher_factory=factory)
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
        # max_calls=0 keeps it, and with it what the process loaded (semdedup's embedding model).
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


