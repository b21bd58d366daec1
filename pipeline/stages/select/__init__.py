"""Deita-style selection: score-first, diversity-aware walk to a budget, optional LIMA quotas.

Python API: `run_select(input, out, SelectConfig(...))`; CLI: `distill select`.
"""

from .config import SelectConfig
from .stage import run_select

__all__ = ["SelectConfig", "run_select"]
