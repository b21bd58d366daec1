"""`distill export DATASET`: a thin shell over `run_export`, and the last step `distill run` chains."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ...cli_common import ConfigOpt, NoProgressOpt, OutOpt, RunIdOpt, SeedOpt, WorkdirOpt, load, resolve_run
from ...config import Config, stage_config
from ...errors import InputFileError
from ...runner import StageContext
from .config import ExportConfig
from .stage import STAGE, run_export


def _heldout(value: str | None) -> int | float | None:
    if value is None:
        return None
    try:
        return float(value) if "." in value else int(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r}: a row count (500) or a share (0.01)") from None


def export_cmd(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder to release (the select output).")],
    out: OutOpt = None,
    tier: Annotated[Optional[str], typer.Option("--tier", help="Release size: 100k, 1m or 10m rows; an error if the input has fewer.")] = None,
    rows: Annotated[Optional[int], typer.Option("--rows", min=1, help="Release size in rows; an error if the input has fewer (default: all rows).")] = None,
    rows_per_shard: Annotated[Optional[int], typer.Option("--rows-per-shard", min=1, help="Rows per train-NNNNN-of-NNNNN.parquet shard (default 100000).")] = None,
    heldout: Annotated[Optional[str], typer.Option("--heldout", help="Held-out 'test' split carved from the release: a count (500) or a share (0.01).")] = None,
    license: Annotated[Optional[str], typer.Option("--license", help="Licence field of the dataset card, e.g. apache-2.0.")] = None,
    config: ConfigOpt = None,
    workdir: WorkdirOpt = None,
    run_id: RunIdOpt = None,
    seed: SeedOpt = None,
    no_progress: NoProgressOpt = False,
) -> None:
    """Write the release: the best N rows as zstd Parquet shards (train-00000-of-000NN.parquet), a dataset card README.md and a checksummed manifest.json."""
    cfg = load(config, workdir=workdir, run_id=run_id, seed=seed)
    ecfg = stage_config(cfg, STAGE, ExportConfig, tier=tier.lower() if tier else None, rows=rows,
                        rows_per_shard=rows_per_shard, heldout=_heldout(heldout), license=license)
    paths = resolve_run(cfg, workdir, run_id)
    target = out or paths.stage_dir(STAGE)
    m = run_export(dataset, target, ecfg, seed=cfg.run.seed, run_id=paths.run_id, progress=not no_progress)
    splits = ", ".join(f"{k} {v:,}" for k, v in m["splits"].items())
    typer.echo(f"export: {m['rows']:,} of {m['available_rows']:,} rows ({splits}) in {len(m['files'])} shard(s) -> {target}")


def plan_step(cfg: Config, paths: Any, input: Path | None, out: Path, ctx: StageContext) -> dict[str, Any]:
    """The `distill run` step: release the select step's output (every row unless [export] sets a size)."""
    if input is None:
        raise InputFileError("export needs a dataset: run it after select, or pass --input")
    ecfg = stage_config(cfg, STAGE, ExportConfig)
    return run_export(input, out, ecfg, seed=cfg.run.seed, run_id=paths.run_id, progress=ctx.progress)
