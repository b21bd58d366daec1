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
    from .stages.self_instruct import SelfInstructConfig
    from .stages.self_instruct.cli import plan_step as self_instruct_step
    steps.append(Step("self_instruct", "self_instruct", self_instruct_step,  # always first: reads the seeds
                      "grow new tasks from the seed pool with the teacher (Self-Instruct)", SelfInstructConfig))
    from .stages.evol_instruct import EvolConfig
    from .stages.evol_instruct.cli import plan_step as evol_step
    steps.append(Step("evol_instruct", "evol_instruct", evol_step,
                      "evolve the instructions into harder and rarer ones (Evol-Instruct)", EvolConfig))
    from .stages.orca import OrcaConfig
    from .stages.orca import plan_step as orca_step
    steps.append(Step("orca", "orca", orca_step,
                      "answer every instruction with explanation traces, prompt-erased (Orca)", OrcaConfig))
    from .stages.minhash import MinhashConfig
    from .stages.minhash import plan_step as minhash_step
    steps.append(Step("minhash", "minhash", minhash_step,
                      "remove near-duplicate text (MinHash LSH, verified, keep policy by score/length/id)", MinhashConfig))
    from .stages.semdedup import SemdedupConfig
    from .stages.semdedup.cli import plan_step as semdedup_step
    steps.append(Step("semdedup", "semdedup", semdedup_step,  # after minhash
                      "drop rows that say the same thing in other words (embedding near-duplicates)", SemdedupConfig))
    from .stages.export.cli import plan_step as export_step
    from .stages.export.config import ExportConfig
    from .stages.score.cli import plan_step as score_step
    from .stages.score.config import ScoreConfig
    from .stages.select.cli import plan_step as select_step
    from .stages.select.config import SelectConfig
    steps.append(Step("score", "score", score_step,  # after semdedup
                      "hygiene gates, decontamination and quality scores (LIMA / Deita / AlpaGasus)", ScoreConfig))
    steps.append(Step("select", "select", select_step,
                      "score-first, diversity-aware selection to the budget (Deita), optional quotas", SelectConfig))
    steps.append(Step("export", "export", export_step,  # always last
                      "write the release: Parquet shards, dataset card, checksummed manifest", ExportConfig))
    return steps
