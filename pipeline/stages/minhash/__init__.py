"""MinHash near-duplicate removal: datasketch-compatible signatures, banding from a recall target,
verified candidates, deterministic keep policy, on-disk phases that resume, incremental `--against`."""

from .config import MinhashConfig
from .stage import run_minhash

__all__ = ["MinhashConfig", "run_minhash"]
