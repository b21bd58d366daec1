"""`distill select DATASET`: a thin shell over `run_select`, and the step `distill run` chains."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ...cli_common import (ConfigOpt, NoProgressOpt, OutOpt, RunIdOpt, ShardRowsOpt, WorkdirOpt, load,
                           resolve_run)
from ...config import Config, ConfigError, stage_config
from ...errors import InputFileError
from ...runner import StageContext, summarize_drops
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


def select_cmd(
    dataset: Annotated[Path, typer.Argument(help="Scored dataset folder (the score stage's output).")],
    out: OutOpt = None,
    budget: Annotated[Optional[int], typer.Option("--budget", "-n", min=1, help="Rows to select (default: config; none = every row that passes).")] = None,
    threshold: Annotated[Optional[float], typer.Option("--threshold", help="Reject a row whose cosine to a selected row is above this (default 0.9).")] = None,
    quota_by: Annotated[Optional[str], typer.Option("--quota-by", help="Stratify by task_kind or origin.")] = None,
    quota: Annotated[Optional[list[str]], typer.Option("--quota", help="STRATUM=COUNT or STRATUM=SHARE (repeatable; '*' for the rest).")] = None,
    min_score: Annotated[Optional[float], typer.Option("--min-score", help="Drop rows whose combined score is below this.")] = None,
    min_accuracy: Annotated[Optional[float], typer.Option("--min-accuracy", help="Drop rows whose accuracy is below this (AlpaGasus: 4.5).")] = None,
    embeddings: Annotated[Optional[Path], typer.Option("--embeddings", help="Precomputed .npy of unit vectors, one row per input row, in input order.")] = None,
    fast: Annotated[Optional[bool], typer.Option("--fast/--full", help="Fast static embedder instead of the full model.")] = None,
    against: Annotated[Optional[Path], typer.Option("--against", help="Published dataset whose rows count as already selected (a row too similar to one is dropped).")] = None,
    config: ConfigOpt = None,
    workdir: WorkdirOpt = None,
    run_id: RunIdOpt = None,
    shard_rows: ShardRowsOpt = None,
    no_progress: NoProgressOpt = False,
) -> None:
    """Select the release: walk rows by score, skip any too similar (cosine > 0.9) to one already taken, stop at the budget (Deita), with optional quotas (LIMA)."""
    cfg = load(config, workdir=workdir, run_id=run_id, shard_rows=shard_rows)
    scfg = stage_config(cfg, STAGE, SelectConfig, budget=budget, threshold=threshold, quota_by=quota_by,
                        quotas=_quotas(quota), min_score=min_score, min_accuracy=min_accuracy,
                        embeddings=str(embeddings) if embeddings else None, fast=fast,
                        against=str(against) if against else None)
    paths = resolve_run(cfg, workdir, run_id)
    target = out or paths.stage_dir(STAGE)
    manifest = run_select(dataset, target, scfg, workdir=paths.workdir, shard_rows=cfg.run.shard_rows,
                          run_id=paths.run_id, progress=not no_progress)
    typer.echo(summary(manifest, target))


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


def plan_step(cfg: Config, paths: Any, input: Path | None, out: Path, ctx: StageContext) -> dict[str, Any]:
    """The `distill run` step: select from the score step's output."""
    if input is None:
        raise InputFileError("select needs a scored dataset: run it after score, or pass --input")
    scfg = stage_config(cfg, STAGE, SelectConfig)
    return run_select(input, out, scfg, workdir=paths.workdir, shard_rows=cfg.run.shard_rows,
                      run_id=paths.run_id, progress=ctx.progress)
