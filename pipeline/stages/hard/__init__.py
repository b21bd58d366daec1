"""Hard-example mining after Lion (Jiang et al., 2023): student answers, a two-order referee, new instructions.

Python API: `run_hard(input, out, HardConfig(...), ctx)`; CLI: `distill hard` (cli.py).
"""

from .config import HardConfig
from .stage import HardStage, run_hard

__all__ = ["HardConfig", "HardStage", "run_hard"]
