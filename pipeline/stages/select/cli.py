"""`distill select DATASET`: the stage's spec and its command, a thin shell over `run_select`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer

from ...config import Config, ConfigError, referenced_path
from ...embeddings.encoder import check_model_path
from ...errors import InputFileError
from ...runner import summarize_drops
from ...stage import StageSpec, referenced_dataset, stage_command
from .config import SelectConfig
from .stage import STAGE, run_select


def _quotas(items: list[str] | None) -> dict[str, int | float] | None:
    if not items:
        return None
    out: dict[str, int | float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            out[key.strip()] = float(value) if "." in value else int(value)
        except ValueError:
            sep = ""
        if not sep or not key.strip():
            raise ConfigError(f"--quota {item!r}: expected STRATUM=COUNT or STRATUM=SHARE, e.g. coding=200 or coding=0.2")
    return out


def summary(manifest: dict[str, Any], out: Path) -> str:
    lines = [f"select: {manifest['selected']} of {manifest['rows_in']} rows selected"
             + (f" (budget {manifest['budget']}{'' if manifest['budget_met'] else ', not met'})" if manifest.get("budget") else "")
             + f" -> {out}",
             f"  examined {manifest['examined']} of {manifest['candidates']} candidates; drops: {summarize_drops(manifest)}"]
    against = (manifest.get("walk") or {}).get("against")
    if against:
        lines.append(f"  against {against['dataset']}: {against['rows']:,} published rows counted as selected "
                     f"({against['vectors']} vectors)")
    if manifest.get("selected_per_stratum"):
        lines.append("  per stratum: " + ", ".join(f"{k}={v}" for k, v in manifest["selected_per_stratum"].items()))
    return "\n".join(lines)


def run(input: Path, out: Path, cfg: SelectConfig, ctx) -> dict[str, Any]:
    """`run_select`; `ctx.against` (the refresh's published pool, whose rows count as already selected)
    replaces `[select] against`."""
    if ctx.against:
        cfg = cfg.model_copy(update={"against": ctx.against[0]})
    return run_select(input, out, cfg, workdir=ctx.workdir, shard_rows=ctx.shard_rows, run_id=ctx.run_id,
                      progress=ctx.progress)


def check(cfg: Config, section: SelectConfig, input: Path | None) -> None:
    check_model_path(cfg, STAGE, section)
    referenced_dataset(cfg, STAGE, "against", section.against)
    if section.embeddings:
        p = referenced_path(cfg, STAGE, "embeddings", section.embeddings)
        try:
            shape = np.load(p, mmap_mode="r").shape
        except (ValueError, OSError) as e:
            raise InputFileError(f"{p}: not a .npy array ({e})") from None
        if len(shape) != 2:
            raise InputFileError(f"{p}: shape {shape}, expected (rows, dim): one row per input row")


SPEC = StageSpec(STAGE, SelectConfig, run, summary,
                 "score-first, diversity-aware selection to the budget (Deita), optional quotas",
                 missing_input="a scored dataset: run it after score, or pass --input",
                 local_only="one global walk over the scores (its embeddings come from semdedup's cache)",
                 check=check)

select_cmd = stage_command(
    SPEC, dataset_help="Scored dataset folder (the score stage's output).",
    help="Select the release: walk rows by score, skip any too similar (cosine > 0.9) to one already taken, stop at the budget (Deita), with optional quotas (LIMA).",
    shared=("config", "workdir", "run_id", "shard_rows", "no_progress"),
    options={
        "budget": (Annotated[Optional[int], typer.Option("--budget", "-n", min=1, help="Rows to select (default: config; none = every row that passes).")], None),
        "threshold": (Annotated[Optional[float], typer.Option("--threshold", help="Reject a row whose cosine to a selected row is above this (default 0.9).")], None),
        "quota_by": (Annotated[Optional[str], typer.Option("--quota-by", help="Stratify by task_kind, origin, or hard (the `distill hard` flag: hard, easy, none).")], None),
        "quota": (Annotated[Optional[list[str]], typer.Option("--quota", help="STRATUM=COUNT or STRATUM=SHARE (repeatable; '*' for the rest).")], None),
        "min_score": (Annotated[Optional[float], typer.Option("--min-score", help="Drop rows whose combined score is below this.")], None),
        "min_accuracy": (Annotated[Optional[float], typer.Option("--min-accuracy", help="Drop rows whose accuracy is below this (AlpaGasus: 4.5).")], None),
        "embeddings": (Annotated[Optional[Path], typer.Option("--embeddings", help="Precomputed .npy of unit vectors, one row per input row, in input order.")], None),
        "fast": (Annotated[Optional[bool], typer.Option("--fast/--full", help="Fast static embedder instead of the full model.")], None),
        "against": (Annotated[Optional[Path], typer.Option("--against", help="Published dataset whose rows count as already selected (a row too similar to one is dropped).")], None),
    },
    overrides=lambda cfg, quota, embeddings, against, **kw: dict(
        kw, quotas=_quotas(quota), embeddings=str(embeddings) if embeddings else None,
        against=str(against) if against else None))
