"""LIMA-style scoring: hygiene gates, decontamination, teacher-judged scores, combined score.

Python API: `run_score(input, out, ScoreConfig(...), ctx)`; CLI: `distill score`.
"""

from .config import ScoreConfig
from .stage import ScoreStage, run_score

__all__ = ["ScoreConfig", "ScoreStage", "run_score"]
