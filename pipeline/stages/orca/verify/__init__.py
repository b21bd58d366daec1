"""Verified reasoning traces: n sampled answers per row, final answers extracted by documented rules, kept
when they agree with the reference or the majority (rejection sampling, self-consistency).

Python API: `run_verify(input, out, ctx, VerifyConfig(...))`; CLI: `distill orca verify` (cli.py).
"""

from .config import VerifyConfig
from .stage import VerifyStage, run_verify

__all__ = ["VerifyConfig", "VerifyStage", "run_verify"]
