"""The pipeline's default plan: the stages `distill run` chains, in order, as their specs, and what each
needs before the first of them starts.

Each spec's `run(input, out, cfg, ctx)` reads the previous stage's folder (or
the seeds, for the first) and writes its own. The DAG is this list and the
folders between stages; there is no scheduler and no stage registers itself.

`check_steps(cfg, steps, ...)` is the check `distill run` and `distill refresh`
make before any work: every step's config section, every file or dataset a
section names (seeds, Orca catalogs and strategy map, decontamination files,
`against` datasets, precomputed embeddings, a model folder), and that the first
step that needs an input has one. It reads those files; it writes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Container

import numpy as np

from .config import Config, check_sections, referenced_path
from .errors import InputFileError
from .stage import StageSpec
from .stages.evol_instruct.cli import SPEC as EVOL_INSTRUCT
from .stages.export.cli import SPEC as EXPORT
from .stages.minhash.cli import SPEC as MINHASH
from .stages.minhash.sigstore import ref_blocks
from .stages.orca.cli import SPEC as ORCA
from .stages.orca.stage import OrcaStage
from .stages.score.cli import SPEC as SCORE
from .stages.score.decontam import read_eval_items
from .stages.select.cli import SPEC as SELECT
from .stages.self_instruct.cli import SPEC as SELF_INSTRUCT
from .stages.self_instruct.seeds import load_seeds
from .stages.semdedup.cli import SPEC as SEMDEDUP
from .store import Dataset


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
        check = REFERENCES.get(s.name)
        if check is not None and (files_of is None or s.name in files_of):
            check(cfg, sections[s.name], input if i == 0 else None)
    return sections


def check_first_input(steps: list[StageSpec], input: Path | None) -> None:
    """The first of `steps` has an input to read, when it needs one (the same line its `run_step` says)."""
    if steps and steps[0].needs_input and input is None:
        raise InputFileError(f"{steps[0].name} needs {steps[0].missing_input}")


def _self_instruct(cfg: Config, section: Any, input: Path | None) -> None:
    if input is not None:
        return  # `distill run --input` gives the seeds; run_plan checks that dataset
    if section.seeds is not None:
        referenced_path(cfg, "self_instruct", "seeds", section.seeds, kind="any")
    load_seeds(section.seeds)  # the stage's own reader: a bad seed file fails now, not after a lock and a ping


def _orca(cfg: Config, section: Any, input: Path | None) -> None:
    if section.strategy_map_file:
        referenced_path(cfg, "orca", "strategy_map_file", section.strategy_map_file)
    OrcaStage(section)  # reads both catalogs, the strategy map and the generic system message, and checks them


def _minhash(cfg: Config, section: Any, input: Path | None) -> None:
    for a in section.against:
        referenced_path(cfg, "minhash", "against", a, kind="dir")
    ref_blocks(section.against, section.signature_format(), 0)  # stored signatures present, of this format


def _semdedup(cfg: Config, section: Any, input: Path | None) -> None:
    _embedder_model(cfg, "semdedup", section)
    _against(cfg, "semdedup", section.against)


def _score(cfg: Config, section: Any, input: Path | None) -> None:
    for f in section.decontaminate:
        read_eval_items(referenced_path(cfg, "score", "decontaminate", f))


def _select(cfg: Config, section: Any, input: Path | None) -> None:
    _embedder_model(cfg, "select", section)
    _against(cfg, "select", section.against)
    if section.embeddings:
        p = referenced_path(cfg, "select", "embeddings", section.embeddings)
        try:
            shape = np.load(p, mmap_mode="r").shape
        except (ValueError, OSError) as e:
            raise InputFileError(f"{p}: not a .npy array ({e})") from None
        if len(shape) != 2:
            raise InputFileError(f"{p}: shape {shape}, expected (rows, dim): one row per input row")


def _against(cfg: Config, section: str, against: str | None) -> None:
    if against:
        referenced_path(cfg, section, "against", against, kind="dir")
        Dataset(against, require_complete=True)


def _embedder_model(cfg: Config, section: str, s: Any) -> None:
    """A model given as a path must be there; a name ('minilm', a cached one) is resolved when it loads."""
    if s.model.startswith(("/", ".", "~")):
        referenced_path(cfg, section, "model", s.model, kind="dir")


# Stage name -> check(cfg, its validated section, its input when it is the first step) of the files the section names.
REFERENCES: dict[str, Callable[[Config, Any, Path | None], None]] = {
    SELF_INSTRUCT.name: _self_instruct, ORCA.name: _orca, MINHASH.name: _minhash, SEMDEDUP.name: _semdedup,
    SCORE.name: _score, SELECT.name: _select,
}
