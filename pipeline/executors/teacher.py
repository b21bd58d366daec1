"""The teacher inside Ray workers: cluster-wide limits (openai), one thread each (llamacpp), engine replicas (vllm).

A worker never receives a teacher, only the picklable `TeacherFactory`
(teacher/factory.py) and builds its own on first use. `worker_factory` is
the Ray executor's one way into teacher placement:

- openai: the factory gets a `ClusterLimiter` (limits.py), so every HTTP
  attempt of every worker holds a permit of the run's one `LimiterActor`;
  the teacher is in the same SQLite response cache as locally (WAL: workers
  on one node share the file).
- llamacpp without `teacher.n_threads`: one 1-thread model per actor.
- vllm: one engine replica per `tensor_parallel_size` GPUs, each a worker
  actor that builds the ordinary `VLLMBackend`; `replica_options` plans the
  Ray resources (num_gpus=1 per replica, or a STRICT_PACK placement group of
  tp GPU bundles that vLLM's own Ray workers are captured into, as vLLM's
  distributed offline-inference example does). Per-request seeds already
  derive from (run seed, record id, purpose, sample index), so replicas
  sample differently per request and a rerun on any replica reproduces.

`worker_judge` places a teacher other than the run's (score's [score.judge_teacher]).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

from ..config import ConfigError
from ..errors import TeacherUnavailable
from ..teacher.factory import TeacherFactory
from .limits import start_limiter, stop_limiter
from .ray_runtime import connect


def worker_factory(ray, factory: Any, resources: dict[str, float], workers: int | None,
                   uses_teacher: bool) -> tuple[Any, list[dict[str, Any]], Callable[[bool], dict[str, Any] | None]]:
    """(the factory a stage's workers build their teacher from, each worker actor's Ray options,
    `stop(graceful)`: ends the run's limiter, returning its stats). A factory other than a
    `TeacherFactory` (a test's callable) is passed through as it is."""
    section = factory.section if uses_teacher and isinstance(factory, TeacherFactory) else None
    limiter = None
    if section is not None and section.backend == "openai":
        limiter = start_limiter(ray, section)
        factory = factory.with_limiter(limiter)
    if section is not None and section.backend == "llamacpp" and section.n_threads is None:
        # one in-process model per actor, on the actor's one CPU: "all cores" in
        # every actor would oversubscribe the node N-fold
        factory = factory.with_section(n_threads=1, replicas=1)
    if section is not None and section.backend == "vllm":
        plan = replica_options(section, resources, workers)
    else:
        plan = [{"num_cpus": 1}] * (workers or max(int(resources.get("CPU", 1)), 1))

    def stop(graceful: bool) -> dict[str, Any] | None:
        return stop_limiter(ray, limiter, graceful) if limiter is not None else None
    return factory, plan, stop


@contextmanager
def worker_judge(factory: TeacherFactory, ray_address: str | None) -> Iterator[TeacherFactory]:
    """A teacher other than the run's for a stage's Ray workers, for the length of the block.

    openai: the model is discovered here once (an unreachable server fails now,
    before any work, as locally) and the workers share a cluster-wide limiter of
    their own, ended with the block. vllm engines are placed only for the run's
    teacher.
    """
    section = factory.section
    if section.backend == "vllm":
        raise ConfigError("a separate judge teacher with backend 'vllm' cannot run inside Ray workers; "
                          "serve it (`vllm serve`) and use backend 'openai', or use --executor local")
    if section.backend != "openai":
        yield factory
        return
    probe = factory.backend()
    probe.close()
    factory = factory.with_section(model=probe.model)
    ray = connect(ray_address)
    limiter = start_limiter(ray, factory.section)
    try:
        yield factory.with_limiter(limiter)
    finally:
        stop_limiter(ray, limiter, graceful=False)


def gpus_per_replica(section) -> int:
    args = section.vllm_args or {}
    return int(args.get("tensor_parallel_size", 1)) * int(args.get("pipeline_parallel_size", 1))


def replica_options(section, resources: dict[str, float], workers: int | None = None) -> list[dict[str, Any]]:
    """Ray options of each vLLM replica actor: one replica per `tp` GPUs of the cluster."""
    tp = gpus_per_replica(section)
    gpus = float(resources.get("GPU", 0))
    n = int(gpus // tp)
    if n < 1:
        raise TeacherUnavailable(
            f"teacher.backend = 'vllm' on Ray needs GPUs: the cluster has {gpus:g}, one replica needs {tp} "
            "(tensor_parallel_size x pipeline_parallel_size); add GPU nodes or use the openai backend")
    if workers:
        n = min(n, workers)
    if tp == 1:
        return [{"num_gpus": 1, "num_cpus": 1}] * n
    return [{"num_gpus": 0, "num_cpus": 1, "gpu_bundles": tp}] * n


def actor_options(ray, opts: dict[str, Any]) -> dict[str, Any]:
    """Turn a planned replica's `gpu_bundles` into its own placement group (tp > 1)."""
    opts = dict(opts)
    tp = opts.pop("gpu_bundles", 0)
    if tp:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
        pg = ray.util.placement_group([{"GPU": 1, "CPU": 1}] * tp, strategy="STRICT_PACK")
        opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
            pg, placement_group_capture_child_tasks=True)
    return opts
