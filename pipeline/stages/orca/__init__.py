"""Orca-style explanation traces (Orca 1 system messages, Orca 2 strategies) with prompt erasure in Orca 2 mode.

Python API: `run_orca(input, out, ctx, OrcaConfig(...))` and
`calibrate(dataset, out_file, ctx, OrcaConfig(...))`; CLI: `distill orca` (cli.py).
"""

from .calibrate import CalibrationResult, calibrate
from .config import OrcaConfig
from .stage import OrcaStage, run_orca
from .task_kind import TASK_KINDS, detect_kind

__all__ = ["CalibrationResult", "OrcaConfig", "OrcaStage", "TASK_KINDS", "calibrate", "detect_kind",
           "run_orca"]
