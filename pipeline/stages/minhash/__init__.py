"""MinHash near-duplicate removal: datasketch-compatible signatures, banding from a recall target,
verified candidates, deterministic keep policy, on-disk phases that resume, incremental `--against`."""

from .config import MinhashConfig
from .stage import run_minhash

__all__ = ["MinhashConfig", "run_minhash", "plan_step"]


def plan_step(cfg, paths, input, out, ctx):
    """`distill run`'s minhash step: the [minhash] section over the previous step's folder."""
    from pipeline.config import stage_config
    mc = stage_config(cfg, "minhash", MinhashConfig)
    return run_minhash(input, out, mc, limit=cfg.run.limit, run_id=paths.run_id, progress=ctx.progress)
