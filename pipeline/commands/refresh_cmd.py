"""`distill refresh`: the nightly job, a thin shell over `pipeline.refresh.run.refresh`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import cli_common as cc
from ..assets import data_dir
from ..context import load
from ..refresh.run import refresh


def refresh_cmd(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML config file (see `distill config init`) (default: the small embedded demo profile, data/demo.toml).")] = None,
    workdir: cc.WorkdirOpt = None,
    publish_dir: Annotated[Optional[Path], typer.Option("--publish-dir", help="Release folder holding versions/ and the `latest` symlink (default: config refresh.publish_dir, else <workdir>/release).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed for tonight's run (default: derived from the run seed of the config, the UTC date and the previous version).")] = None,
    max_rows: Annotated[Optional[int], typer.Option("--max-rows", min=1, help="Budget: at most this many generated rows tonight.")] = None,
    max_tokens: Annotated[Optional[int], typer.Option("--max-tokens", min=1, help="Budget: teacher tokens sent tonight (cache hits are free).")] = None,
    max_seconds: Annotated[Optional[float], typer.Option("--max-seconds", min=0.001, help="Budget: send no teacher request after this many seconds.")] = None,
    max_cost: Annotated[Optional[float], typer.Option("--max-cost", min=0.0, help="Budget: spend at most this much tonight, in the [teacher] prices' currency (needs price_prompt_per_mtok and price_completion_per_mtok).")] = None,
    keep: Annotated[Optional[int], typer.Option("--keep", min=1, help="Published versions to keep (default: config refresh.keep_versions, 3).")] = None,
    executor: cc.ExecutorOpt = None,
    ray_address: cc.RayAddressOpt = None,
    no_progress: cc.NoProgressOpt = False,
) -> None:
    """Nightly refresh: lock, generate new rows within a budget, dedup them against the published release, publish a new version atomically.

    Steps: take <publish-dir>/.refresh.lock; start run <workdir>/refresh-YYYYMMDD-HHMMSS; ping the teacher;
    run the generation stages under the budget; drop rows whose id is already published, then MinHash and
    semdedup against the latest version's pool; score and select; build the new version (previous pool +
    new rows, Parquet shards, dataset card, manifest) and switch `latest` to it in one rename.
    refresh_summary.json in the run folder records every outcome.

    Exit codes: 0 a new version was published (also when the budget ran out part way: what was made
    within it is published); 8 nothing new (every new row duplicated the release or was dropped);
    7 budget exhausted before any new row could be published; 6 locked (another refresh is running;
    exits at once); 4 teacher unavailable; 3 data error; 2 config or usage error; 5 write failed.
    """

    if config is None:
        config = data_dir() / "demo.toml"
        typer.echo(f"no --config: refreshing with the embedded demo profile {config} "
                   "(write your own with `distill config init distill.toml`)", err=True)
    cfg = load(config, workdir=workdir, executor=executor, ray_address=ray_address)
    result = refresh(cfg, publish_dir=publish_dir, seed=seed, max_rows=max_rows, max_tokens=max_tokens,
                     max_seconds=max_seconds, max_cost=max_cost, keep=keep, progress=not no_progress,
                     echo=lambda s: typer.echo(s, err=True))
    typer.echo(f"{result.status}: {result.message}", err=result.exit_code != 0)
    typer.echo(f"summary: {Path(cfg.run.workdir) / result.run_id / 'refresh_summary.json'}", err=True)
    raise typer.Exit(result.exit_code)
