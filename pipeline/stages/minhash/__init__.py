"""MinHash near-duplicate removal: datasketch-compatible signatures, banding from a recall target,
verified candidates, deterministic keep policy, on-disk phases that resume, incremental `--against`."""

from .config import MinhashConfig
from .stage import run_minhash

__all__ = ["MinhashConfig", "run", "run_minhash", "plan_step"]


def plan_step(cfg, paths, input, out, ctx):
    """`distill run`'s minhash step: the [minhash] section over the previous step's folder."""
    from pipeline.config import stage_config
    mc = stage_config(cfg, "minhash", MinhashConfig)
    return run(input, out, mc, executor=ctx.executor, ray_address=ctx.ray_address,
               limit=cfg.run.limit, run_id=paths.run_id, progress=ctx.progress)


def run(input, out, config=None, *, executor: str = "local", ray_address: str | None = None,
        ray_workers: int | None = None, **kwargs):
    """`run_minhash` on the chosen executor: local processes (`config.workers`), or the
    same phases as Ray tasks (`ray_workers` in flight, default every CPU of the cluster)."""
    if executor == "ray":
        from pipeline.executors.ray_dedup import run_minhash_ray
        return run_minhash_ray(input, out, config, ray_address=ray_address, workers=ray_workers, **kwargs)
    if executor != "local":
        raise ValueError(f"unknown executor {executor!r}; use 'local' or 'ray'")
    return run_minhash(input, out, config, **kwargs)
