"""The pipeline's default plan: the stages `distill run` chains, in order, as their specs.

Each spec's `run(input, out, cfg, ctx)` reads the previous stage's folder (or
the seeds, for the first) and writes its own. The DAG is this list and the
folders between stages; there is no scheduler and no stage registers itself.
"""

from __future__ import annotations

from .stage import StageSpec
from .stages.evol_instruct.cli import SPEC as EVOL_INSTRUCT
from .stages.export.cli import SPEC as EXPORT
from .stages.minhash.cli import SPEC as MINHASH
from .stages.orca.cli import SPEC as ORCA
from .stages.score.cli import SPEC as SCORE
from .stages.select.cli import SPEC as SELECT
from .stages.self_instruct.cli import SPEC as SELF_INSTRUCT
from .stages.semdedup.cli import SPEC as SEMDEDUP


def default_plan() -> list[StageSpec]:
    return [
        SELF_INSTRUCT,  # always first: reads the seeds
        EVOL_INSTRUCT,
        ORCA,
        MINHASH,
        SEMDEDUP,       # after minhash: embeddings of fewer rows
        SCORE,          # after the dedup stages
        SELECT,
        EXPORT,         # always last
    ]
