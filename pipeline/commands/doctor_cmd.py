"""`distill doctor`: what this machine is, and whether each part distill needs works on it."""

from __future__ import annotations

import typer

from .. import cli_common as cc
from ..context import load
from ..doctor import run_checks


def doctor_cmd(config: cc.ConfigOpt = None, workdir: cc.WorkdirOpt = None) -> None:
    """Check this machine: CPU features, llama.cpp, the embedded teacher, torch/faiss, Ray, disk, the configured teacher.

    Prints one line per check; exits 1 when a check fails, with the fix under it."""

    cfg = load(config, workdir=workdir)

    def show(c) -> None:
        typer.echo(f"{'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}")
        if not c.ok and c.fix:
            typer.echo(f"     fix: {c.fix}")

    failed = [c for c in run_checks(cfg, on_check=show) if not c.ok]
    if failed:
        typer.echo(f"{len(failed)} check(s) failed: {', '.join(c.name for c in failed)}", err=True)
        raise typer.Exit(1)
