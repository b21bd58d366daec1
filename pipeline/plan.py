"""The pipeline's default plan: the stages `distill run` chains, in order, as their specs, and what each
needs before the first of them starts.

Each spec's `run(input, out, cfg, ctx)` reads the previous stage's folder (or
the seeds, for the first) and writes its own. The DAG is this list and the
folders between stages; there is no scheduler and no stage registers itself.

`check_steps(cfg, steps, ...)` is the check `distill run` and `distill refresh`
make before any work: every step's config section, every file or dataset a
section names (each spec's `check`: seeds, Orca catalogs and strategy map,
decontamination files, `against` datasets, precomputed embeddings, a model
folder), and that the first step that needs an input has one. It reads those
files; it writes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Container

from .config import Config, check_sections
from .errors import InputFileError
from .stage import StageSpec
from .stages.evol_instruct.cli import SPEC as EVOL_INSTRUCT
from .stages.export.cli import SPEC as EXPORT
from .stages.hard.cli import SPEC as HARD
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
        HARD,           # optional ([hard] enabled): needs answers; its new instructions are answered by orca
        ORCA,
        MINHASH,
        SEMDEDUP,       # after minhash: embeddings of fewer rows
        SCORE,          # after the dedup stages
        SELECT,
        EXPORT,         # always last
    ]


def optional_off(cfg: Config, plan: list[StageSpec]) -> list[str]:
    """The optional steps of `plan` this config does not turn on (`[section] enabled = true`)."""
    return [s.name for s in plan if s.optional and not getattr(cfg, s.name, {}).get("enabled")]


def check_steps(cfg: Config, steps: list[StageSpec], *, input: Path | None = None,
                files_of: Container[str] | None = None) -> dict[str, Any]:
    """Fail before any work when a step cannot run; returns each step's validated section by name.

    `steps` are the steps that will run, in order (skipped ones left out: they need not be valid);
    `input` is what the first of them reads (self_instruct reads it as its seeds; `check_first_input`
    says whether one is needed). Sections are checked first, all at once (a typo costs no file reads);
    then the files named by the sections of the steps in `files_of` (default all: a step already
    finished is not checked against files it no longer reads).
    """
    sections = check_sections(cfg, {s.name: s.config for s in steps})
    for i, s in enumerate(steps):
        if s.check is not None and (files_of is None or s.name in files_of):
            s.check(cfg, sections[s.name], input if i == 0 else None)
    return sections


def check_first_input(steps: list[StageSpec], input: Path | None) -> None:
    """The first of `steps` has an input to read, when it needs one (the same line its `run_step` says)."""
    if steps and steps[0].needs_input and input is None:
        raise InputFileError(f"{steps[0].name} needs {steps[0].missing_input}")
