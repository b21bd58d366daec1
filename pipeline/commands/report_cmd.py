"""`distill report`: an HTML page about a run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import cli_common as cc
from ..context import load, resolve_run
from ..report import write_report


def report_cmd(
    run_dir: Annotated[Optional[Path], typer.Argument(help="Run folder, release folder, or releases folder (follows `latest`) [default: the workdir's current run].")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="HTML file to write [default: <run>/report.html; for a release ./report-<version>.html].")] = None,
    config: cc.ConfigOpt = None,
    workdir: cc.WorkdirOpt = None,
) -> None:
    """Write an HTML report of a run or release: funnel, drops, lengths, scores, evolution, dedup clusters, tokens."""

    if run_dir is None:
        cfg = load(config, workdir=workdir)
        run_dir = resolve_run(cfg, workdir).run_dir
    typer.echo(f"wrote {write_report(run_dir, out)}")
