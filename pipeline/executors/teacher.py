"""The teacher inside Ray workers: cluster-wide limits (openai) and engine replicas (vllm).

A worker never receives a teacher, only the picklable `teacher.factory.TeacherFactory`
(the [teacher] section, workdir and run seed) and builds its own on first use.

- openai: `ClusterTeacherFactory` builds `ClusterLimitedOpenAI`, the openai
  backend whose every HTTP attempt holds a permit of the run's one
  `LimiterActor` (see limits.py), wrapped in the same SQLite response cache as
  `make_teacher` (WAL: workers on one node share the file).
- vllm: one engine replica per `tensor_parallel_size` GPUs, each a worker
  actor that builds the ordinary `VLLMBackend`; `replica_options` plans the
  Ray resources (num_gpus=1 per replica, or a STRICT_PACK placement group of
  tp GPU bundles that vLLM's own Ray workers are captured into, as vLLM's
  distributed offline-inference example does). Per-request seeds already
  derive from (run seed, record id, purpose, sample index), so replicas
  sample differently per request and a rerun on any replica reproduces.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import TeacherUnavailable
from ..teacher.openai_backend import OpenAIBackend
from .limits import body_tokens


class ClusterLimitedOpenAI(OpenAIBackend):
    """The openai backend with the cluster's permits instead of per-process rpm/tpm.

    Hooks `OpenAIBackend._post` (one HTTP attempt): acquire before, release
    after with the reported usage. Local concurrency stays `teacher.concurrency`
    (one worker may use every permit while the others are idle); the permits
    bound the sum.
    """

    def __init__(self, section, *, seed: int = 0, limiter: Any = None):
        self._limiter = limiter
        self._need_tokens = section.tpm is not None
        super().__init__(section.model_copy(update={"rpm": None, "tpm": None}), seed=seed)

    async def _post(self, session, body: bytes, url: str):
        ticket = await self._limiter.acquire.remote(body_tokens(body, self._need_tokens))
        used = 0
        try:
            c = await super()._post(session, body, url)
            used = c.usage.prompt_tokens + c.usage.completion_tokens
            return c
        finally:
            self._limiter.release.remote(ticket, used)


@dataclass(frozen=True)
class ClusterTeacherFactory:
    """`make_teacher` for a worker: the limited openai backend, then the response cache."""

    base: Any        # teacher.factory.TeacherFactory
    limiter: Any     # a LimiterActor handle

    def __call__(self):
        section, workdir, seed = self.base.section, self.base.workdir, self.base.seed
        from ..teacher import with_cache
        backend = ClusterLimitedOpenAI(section, seed=seed, limiter=self.limiter)
        wrap = getattr(self.base, "wrap", None)
        return with_cache(wrap(backend) if wrap is not None else backend, section, workdir=workdir, seed=seed)


def worker_teacher_factory(section, ctx) -> tuple[Any, Any, dict[str, Any]]:
    """A teacher other than the run's that a stage builds inside its Ray workers (score's
    [score.judge_teacher]): (factory, limiter or None, {"backend", "model"}).

    openai: the model is discovered here once (an unreachable server fails now,
    before any work, as locally) and the workers share a cluster-wide limiter of
    their own (kill it when the stage is done). vllm engines are placed only for
    the run's teacher.
    """
    from ..config import ConfigError
    from ..teacher.factory import TeacherFactory
    from .ray_runtime import connect

    if section.backend == "vllm":
        raise ConfigError("a separate judge teacher with backend 'vllm' cannot run inside Ray workers; "
                          "serve it (`vllm serve`) and use backend 'openai', or use --executor local")
    if section.backend != "openai":
        return TeacherFactory(section, Path(ctx.workdir).resolve(), ctx.seed), None, {
            "backend": section.backend, "model": section.model}
    probe = OpenAIBackend(section, seed=ctx.seed)
    probe.close()
    section = section.model_copy(update={"model": probe.model})
    from .limits import start_limiter
    limiter = start_limiter(connect(ctx.ray_address), section)
    factory = ClusterTeacherFactory(TeacherFactory(section, Path(ctx.workdir).resolve(), ctx.seed), limiter)
    return factory, limiter, {"backend": "openai", "model": probe.model}


def teacher_section(factory: Any):
    """The [teacher] section behind a context's factory, when it is the configured one."""
    from ..teacher.factory import TeacherFactory
    return factory.section if isinstance(factory, TeacherFactory) else None


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
