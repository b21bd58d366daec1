"""`distill run`: every stage of the default plan in order, each reading the previous one's folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import cli_common as cc
from ..assets import data_dir
from ..context import load, resolve_run
from ..report import write_report
from ..runplan import run_plan


def run_cmd(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML config file (see `distill config init`) [default: the small embedded demo profile, data/demo.toml].")] = None,
    workdir: cc.WorkdirOpt = None,
    run_id: cc.RunIdOpt = None,
    new: Annotated[bool, typer.Option("--new", help="Start a new dated run instead of resuming the current one.")] = False,
    skip: Annotated[Optional[list[str]], typer.Option("--skip", help="Skip a stage (repeatable); its input passes through.")] = None,
    start: Annotated[Optional[str], typer.Option("--from", help="Start at this stage (earlier stages are not run).")] = None,
    input: Annotated[Optional[Path], typer.Option("--input", help="Dataset the first stage run reads [default: the previous stage's folder, or the team's seed tasks].")] = None,
    limit: cc.LimitOpt = None,
    seed: cc.SeedOpt = None,
    executor: cc.ExecutorOpt = None,
    ray_address: cc.RayAddressOpt = None,
    no_progress: cc.NoProgressOpt = False,
    no_report: Annotated[bool, typer.Option("--no-report", help="Do not write <run>/report.html at the end.")] = False,
    batch_wait: Annotated[Optional[float], typer.Option("--batch-wait", metavar="SECONDS", min=0, help="Batch teachers: exit 9 after this many seconds with batches in flight (rerun to collect) [default: teacher.batch_wait_s, wait until they end].")] = None,
    max_cost: Annotated[Optional[float], typer.Option("--max-cost", min=0.0, help="Spend cap in the [teacher] prices' currency (e.g. USD), counted from actual usage; at the cap the run stops with exit 7, keeping what is finished (a rerun continues).")] = None,
) -> None:
    """Run the stages in order (self-instruct ... export) from one TOML config; a rerun resumes where it stopped."""

    if config is None:
        config = data_dir() / "demo.toml"
        typer.echo(f"no --config: running the embedded demo profile {config} "
                   "(write your own with `distill config init distill.toml`)", err=True)
    cfg = load(config, workdir=workdir, run_id=run_id, limit=limit, seed=seed,
                  executor=executor, ray_address=ray_address)
    if batch_wait is not None:
        cfg.teacher.batch_wait_s = batch_wait
    paths = resolve_run(cfg, workdir, run_id, new=new)
    summary = run_plan(cfg, paths, skip=skip or [], start=start, input=input, progress=not no_progress,
                       echo=lambda s: typer.echo(s, err=True), max_cost=max_cost)
    typer.echo(f"run {paths.run_id} finished: {summary['final_rows']} rows in {summary['final_dataset']}")
    if not no_report:
        typer.echo(f"report: {write_report(paths.run_dir)}")
