"""`distill select DATASET`: the stage's spec and its command, a thin shell over `run_select`."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer

from ...config import Config, ConfigError, referenced_path, stage_config
from ...embeddings.encoder import check_model_path
from ...errors import InputFileError
from ...runner import summarize_drops
from ...stage import StageSpec, referenced_dataset, stage_command
from ..export.config import ExportConfig
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


def _budget(value: str | None) -> int | str | None:
    if value is None or value == "all":
        return value
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"--budget {value!r}: a row count (e.g. 10000) or 'all'") from None


def release_budget(cfg: Config, section: SelectConfig, ctx) -> tuple[int | str | None, str | None]:
    """(budget, where it came from): [select] budget when set; else the release size [export] names (tier or
    rows), unless selecting against a published pool (the tier sizes the release, not tonight's rows); else
    None (run_select's DEFAULT_BUDGET)."""
    if section.budget is not None:
        return section.budget, "config"
    if not ctx.against and not section.against:
        try:
            export = stage_config(cfg, "export", ExportConfig)
        except ConfigError:  # reported by the export step's own check, not here
            return None, None
        if export.tier:
            return export.requested_rows(), "export.tier"
        if export.rows:
            return export.rows, "export.rows"
    return None, None


def threshold_text(t: dict[str, Any] | None) -> str:
    if not t:
        return ""
    if t.get("mode") == "quantile":
        return (f"threshold {t['value']:.4f} (the pool's q{t['quantile']:g} nearest-neighbour cosine, "
                f"{t.get('sample_rows', 0):,} rows sampled)")
    return f"threshold {t['value']:g} (absolute)"


def summary(manifest: dict[str, Any], out: Path) -> str:
    lines = [f"select: {manifest['selected']} of {manifest['rows_in']} rows selected"
             + (f" (budget {manifest['budget']}{'' if manifest['budget_met'] else ', not met'})" if manifest.get("budget") else "")
             + f" -> {out}",
             f"  examined {manifest['examined']} of {manifest['candidates']} candidates; drops: {summarize_drops(manifest)}"]
    if manifest.get("threshold"):
        lines.append(f"  {threshold_text(manifest['threshold'])}")
    against = (manifest.get("walk") or {}).get("against")
    if against:
        lines.append(f"  against {against['dataset']}: {against['rows']:,} published rows counted as selected "
                     f"({against['vectors']} vectors)")
    if manifest.get("selected_per_stratum"):
        lines.append("  per stratum: " + ", ".join(f"{k}={v}" for k, v in manifest["selected_per_stratum"].items()))
    return "\n".join(lines)


def run(input: Path, out: Path, cfg: SelectConfig, ctx, budget_source: str | None = None) -> dict[str, Any]:
    """`run_select`; `ctx.against` (the refresh's published pool, whose rows count as already selected)
    replaces `[select] against`."""
    if ctx.against:
        cfg = cfg.model_copy(update={"against": ctx.against[0]})
    return run_select(input, out, cfg, workdir=ctx.workdir, shard_rows=ctx.shard_rows, run_id=ctx.run_id,
                      progress=ctx.progress, budget_source=budget_source)


class SelectSpec(StageSpec):
    """The select stage's spec: its budget defaults to the release size the config's [export] names."""

    def run_section(self, cfg: Config, input: Path | None, out: Path, section: Any, ctx, *, ping: bool = False):
        budget, source = release_budget(cfg, section, ctx)
        spec = replace(self, run=partial(self.run, budget_source=source))
        return StageSpec.run_section(spec, cfg, input, out, section.model_copy(update={"budget": budget}), ctx,
                                     ping=ping)


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


SPEC = SelectSpec(STAGE, SelectConfig, run, summary,
                 "score-first, diversity-aware selection to the budget (Deita), optional quotas",
                 missing_input="a scored dataset: run it after score, or pass --input",
                 local_only="one global walk over the scores (its embeddings come from semdedup's cache)",
                 check=check)

select_cmd = stage_command(
    SPEC, dataset_help="Scored dataset folder (the score stage's output).",
    help="Select the release: walk rows by score, skip any whose whole conversation is too similar to one already taken "
         "(above the pool's 0.9 quantile of nearest-neighbour cosine, or --threshold), stop at the budget (Deita), with optional quotas (LIMA).",
    shared=("config", "workdir", "run_id", "shard_rows", "no_progress"),
    options={
        "budget": (Annotated[Optional[str], typer.Option("--budget", "-n", help="Rows to select, or 'all' (default: config, else the [export] tier or rows, else 10000).")], None),
        "threshold": (Annotated[Optional[float], typer.Option("--threshold", help="Absolute: reject a row whose cosine to a selected row is above this (Deita: 0.9).")], None),
        "threshold_quantile": (Annotated[Optional[float], typer.Option("--threshold-quantile", help="Relative threshold (default 0.9): this quantile of the pool's nearest-neighbour cosines.")], None),
        "text": (Annotated[Optional[str], typer.Option("--text", help="What is embedded: conversation (default) or fields.")], None),
        "quota_by": (Annotated[Optional[str], typer.Option("--quota-by", help="Stratify by task_kind, origin, or hard (the `distill hard` flag: hard, easy, none).")], None),
        "quota": (Annotated[Optional[list[str]], typer.Option("--quota", help="STRATUM=COUNT or STRATUM=SHARE (repeatable; '*' for the rest).")], None),
        "min_score": (Annotated[Optional[float], typer.Option("--min-score", help="Drop rows whose combined score is below this.")], None),
        "min_accuracy": (Annotated[Optional[float], typer.Option("--min-accuracy", help="Drop rows whose accuracy is below this (AlpaGasus: 4.5).")], None),
        "embeddings": (Annotated[Optional[Path], typer.Option("--embeddings", help="Precomputed .npy of unit vectors, one row per input row, in input order.")], None),
        "fast": (Annotated[Optional[bool], typer.Option("--fast/--full", help="Fast static embedder instead of the full model.")], None),
        "against": (Annotated[Optional[Path], typer.Option("--against", help="Published dataset whose rows count as already selected (a row too similar to one is dropped).")], None),
    },
    overrides=lambda cfg, quota, embeddings, against, budget, **kw: dict(
        kw, quotas=_quotas(quota), budget=_budget(budget), embeddings=str(embeddings) if embeddings else None,
        against=str(against) if against else None))
