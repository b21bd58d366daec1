"""The typer options every dataset-producing command shares (how they resolve: pipeline/context.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML config file (see `distill config init`).")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Output dataset folder [default: <workdir>/<run-id>/<stage>].")]
WorkdirOpt = Annotated[Optional[Path], typer.Option("--workdir", help="Folder holding all runs [default: config run.workdir, 'work'].")]
RunIdOpt = Annotated[Optional[str], typer.Option("--run-id", help="Run folder name [default: the current run].")]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", min=1, help="Process at most this many input rows.")]
ShardRowsOpt = Annotated[Optional[int], typer.Option("--shard-rows", min=1, help="Rows per output shard (the unit of restart).")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Run seed for all sampling and choices.")]
NoProgressOpt = Annotated[bool, typer.Option("--no-progress", help="Hide progress bars.")]
ExecutorOpt = Annotated[Optional[str], typer.Option("--executor", help="Where shards run: local, or ray (needs `pip install 'distill[ray]'`) [default: config run.executor, local].")]
RayAddressOpt = Annotated[Optional[str], typer.Option("--ray-address", help="Ray cluster to join with --executor ray (e.g. auto, ray://head:10001) [default: config run.ray_address, $RAY_ADDRESS, else a local Ray].")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Write even where --out holds other data: its old contents are moved into <out>/.stale/ (never deleted).")]
AllowPartialOpt = Annotated[bool, typer.Option("--allow-partial", help="Read an unfinished input's finished shards instead of refusing it (recorded in the manifest) [default: config run.allow_partial, off].")]
