"""`distill plan`: what a run of the config costs at a target size, from a small pilot (pipeline/costplan.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import cli_common as cc
from ..assets import data_dir
from ..context import load
from ..costplan import PROJECTION, TIERS, plan, target_rows
from ..costtable import table
from ..report import write_report


def plan_cmd(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML config file [default: the embedded demo profile, data/demo.toml].")] = None,
    rows: Annotated[Optional[int], typer.Option("--rows", min=1, help="Target size: the new instructions Self-Instruct makes, or the input rows the first stage reads.")] = None,
    tier: Annotated[Optional[str], typer.Option("--tier", help=f"Target size by name: {', '.join(TIERS)} rows.")] = None,
    pilot_rows: Annotated[Optional[int], typer.Option("--pilot-rows", min=1, help="Size of the pilot run [default: 100].")] = None,
    input: Annotated[Optional[Path], typer.Option("--input", help="Dataset the first stage reads (as `distill run --input`).")] = None,
    skip: Annotated[Optional[list[str]], typer.Option("--skip", help="Skip a stage (repeatable), as `distill run --skip`.")] = None,
    workdir: cc.WorkdirOpt = None,
    seed: cc.SeedOpt = None,
    no_progress: cc.NoProgressOpt = False,
) -> None:
    """Project a run's teacher tokens, wall time and cost (online and batch, per kept row) from a small pilot.

    The pilot runs every configured stage at --pilot-rows into <workdir>/pilot-<fingerprint>/ (a pilot
    already made for the same config and size is reused; its answers are cached, so a rerun is free),
    measures tokens per request, requests per kept row and each stage's yield, and projects them to
    --rows (or --tier). The table goes to stdout; <pilot>/projection.json and <pilot>/report.html keep it.
    """

    n = target_rows(rows, tier)
    if config is None:
        config = data_dir() / "demo.toml"
        typer.echo(f"no --config: planning the embedded demo profile {config}", err=True)
    cfg = load(config, workdir=workdir, seed=seed)
    result = plan(cfg, n, pilot_rows=pilot_rows or 100, input=input, skip=skip or [], progress=not no_progress,
                  echo=lambda s: typer.echo(s, err=True))
    typer.echo(table(result))
    pilot = Path(result["pilot_dir"])
    typer.echo(f"projection: {pilot / PROJECTION}; report: {write_report(pilot)}", err=True)
