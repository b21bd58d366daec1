"""The pipeline's default plan: the stages `distill run` chains, in order.

Each step is a function (cfg, paths, input, out, ctx) -> manifest that reads
the previous step's folder (or the seeds, for the first) and writes its own.
The DAG is this list and the folders between steps; there is no scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .cli_common import RunPaths
from .config import Config
from .runner import StageContext

StepFn = Callable[[Config, RunPaths, "Path | None", Path, StageContext], dict[str, Any]]


@dataclass(frozen=True)
class Step:
    name: str      # folder name under the run, and the name used by --skip / --from
    section: str   # config section
    run: StepFn
    doc: str
    config_model: type | None = None  # the pydantic model of the step's config section


def default_plan() -> list[Step]:
    # Imported here so that `distill --help` does not import every stage.
    steps: list[Step] = []
    # -- each stage issue appends its step here, in pipeline order --
    return steps
