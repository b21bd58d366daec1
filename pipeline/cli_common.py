"""Options every dataset-producing command shares, and how they resolve to paths.

Convention: the input dataset (or file) is the positional argument, `--out`
names the output folder, default `<workdir>/<run-id>/<stage>/`. The run id is,
in order: `--run-id`, the config's `run.run_id`, the workdir's current run
(`<workdir>/CURRENT`), or a new dated id that becomes current.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .config import Config, load_config
from .runner import StageContext
from .teacher.factory import TeacherFactory

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

CURRENT = "CURRENT"


@dataclass
class RunPaths:
    workdir: Path
    run_id: str

    @property
    def run_dir(self) -> Path:
        return self.workdir / self.run_id

    def stage_dir(self, stage: str) -> Path:
        return self.run_dir / stage


def new_run_id() -> str:
    return "run-" + datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def resolve_run(cfg: Config, workdir: Path | None = None, run_id: str | None = None,
                new: bool = False) -> RunPaths:
    wd = Path(workdir or cfg.run.workdir)
    rid = run_id or cfg.run.run_id
    current = wd / CURRENT
    if rid is None and not new and current.is_file():
        rid = current.read_text().strip() or None
    if rid is None:
        rid = new_run_id()
    wd.mkdir(parents=True, exist_ok=True)
    tmp = wd / f".{CURRENT}.tmp-{os.getpid()}"
    tmp.write_text(rid + "\n")
    os.replace(tmp, current)
    return RunPaths(wd, rid)


def load(config: Path | None, *, workdir: Path | None = None, run_id: str | None = None,
         limit: int | None = None, shard_rows: int | None = None, seed: int | None = None,
         executor: str | None = None, ray_address: str | None = None) -> Config:
    """The config file with CLI flags on top."""
    overrides: dict[str, dict[str, Any]] = {"run": {
        "workdir": str(workdir) if workdir else None, "run_id": run_id,
        "limit": limit, "shard_rows": shard_rows, "seed": seed,
        "executor": executor, "ray_address": ray_address}}
    return load_config(config, overrides)


def make_context(cfg: Config, paths: RunPaths, progress: bool = True) -> StageContext:
    if cfg.run.executor == "ray":
        from .executors.ray_runtime import require_ray
        require_ray()  # one-line install hint before any work
    factory = TeacherFactory(cfg.teacher, Path(paths.workdir).resolve(), cfg.run.seed)
    return StageContext(run_id=paths.run_id, seed=cfg.run.seed, workdir=paths.workdir,
                        teacher_factory=factory, progress=progress,
                        executor=cfg.run.executor, ray_address=cfg.run.ray_address)
