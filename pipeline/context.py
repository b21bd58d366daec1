"""The run a command works in: its folders, its config with the CLI flags on top, and the context every stage gets.

Convention: the input dataset (or file) is a command's positional argument,
`--out` names the output folder, default `<workdir>/<run-id>/<stage>/`. The
run id is, in order: `--run-id`, the config's `run.run_id`, the workdir's
current run (`<workdir>/CURRENT`), or a new dated id that becomes current.

`RunContext` is what a stage may use besides its rows: run identity and
seeding, the teacher (built on first use from a picklable factory, so a Ray
worker builds its own), the executor the stage's shards and tasks run on,
and the refresh's seams (`against`: published datasets to dedup against,
`budget`: a spend cap shared by every stage of the run).
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from .config import Config, load_config
from .errors import ConfigError
from .executors import make_executor
from .executors.local import LocalExecutor
from .seeding import rng_for
from .store import atomic_write_bytes
from .teacher.budget import Budget
from .teacher.factory import TeacherFactory

CURRENT = "CURRENT"
_BUILDING = threading.RLock()  # overlapping shards' threads: the run's teacher is built once


@dataclass
class RunPaths:
    workdir: Path
    run_id: str

    def __post_init__(self) -> None:
        check_run_id(self.run_id, "run id")

    @property
    def run_dir(self) -> Path:
        return self.workdir / self.run_id

    def stage_dir(self, stage: str) -> Path:
        return self.run_dir / stage


def new_run_id() -> str:
    return "run-" + datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def check_run_id(rid: str, source: str) -> str:
    """`rid` if it names one folder inside the workdir; else ConfigError naming `source` (where it came from)."""
    if (not rid or "/" in rid or "\\" in rid or rid.startswith(".") or "\0" in rid or rid != rid.strip()
            or rid == CURRENT):
        raise ConfigError(f"{source}: run id {rid!r} must be one folder name inside the workdir: no path "
                          f"separator, no leading dot or '..', no surrounding spaces, not {CURRENT} (e.g. run-20250101)")
    return rid


def resolve_run(cfg: Config, workdir: Path | None = None, run_id: str | None = None,
                new: bool = False) -> RunPaths:
    """The run's folders; the run id is checked before anything is written (it becomes a folder name)."""
    wd = Path(workdir or cfg.run.workdir)
    current = wd / CURRENT
    if run_id is not None:
        rid = check_run_id(run_id, "--run-id")
    elif cfg.run.run_id is not None:
        rid = check_run_id(cfg.run.run_id, f"{cfg.source or 'config'}: [run] run_id")
    else:
        rid = None
        if not new and current.is_file():
            try:
                text = current.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as e:
                raise ConfigError(f"{current}: unreadable current-run file ({e}); delete it or pass --run-id") from None
            rid = check_run_id(text, f"{current} (the current run; delete the file or pass --run-id)") if text else None
        if rid is None:
            rid = new_run_id()
    atomic_write_bytes(current, (rid + "\n").encode())
    return RunPaths(wd, rid)


def load(config: Path | None, *, workdir: Path | None = None, run_id: str | None = None,
         limit: int | None = None, shard_rows: int | None = None, seed: int | None = None,
         executor: str | None = None, ray_address: str | None = None,
         allow_partial: bool | None = None) -> Config:
    """The config file with CLI flags on top."""
    overrides: dict[str, dict[str, Any]] = {"run": {
        "workdir": str(workdir) if workdir else None, "run_id": run_id,
        "limit": limit, "shard_rows": shard_rows, "seed": seed,
        "executor": executor, "ray_address": ray_address, "allow_partial": allow_partial or None}}
    return load_config(config, overrides)


class ViewFactory:
    """The teacher factory of a `with_teacher_view` copy: builds the view around the run's teacher, and
    reads as the run's factory otherwise (its section: the teacher's context window)."""

    def __init__(self, ctx: "RunContext", view: Callable[[Any], Any]):
        self.ctx, self.view, self.base = ctx, view, ctx.teacher_factory

    def __call__(self) -> Any:
        return self.view(self.ctx.teacher)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or "base" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.base, name)


@dataclass
class RunContext:
    """What a stage may use besides its rows. `executor` may be given by name ("local", "ray")."""

    run_id: str
    seed: int = 0
    workdir: Path = Path("work")
    teacher_factory: Callable[[], Any] | None = None
    progress: bool = True
    executor: Any = "local"          # run.executor: where shards and phase tasks run (pipeline/executors)
    ray_address: str | None = None   # run.ray_address, for executor = "ray"
    against: tuple[str, ...] = ()    # published data to dedup against: minhash adds it to its own, semdedup/select use it
    budget: Budget = field(default_factory=Budget)  # the run's spend cap; a stage's own caps are its children
    shard_rows: int = 1000           # run.shard_rows: rows per shard of a per-shard stage
    limit: int | None = None         # run.limit: at most this many input rows
    allow_partial: bool = False      # run.allow_partial: an unfinished input's finished shards may be read
    overwrite: bool = False          # --overwrite: move what --out holds into <out>/.stale/ first
    echo: Callable[[str], None] | None = None  # a stage's notes for a person (stderr of a stage command)
    min_novelty: float | None = None  # run.min_novelty: a generating stage stops under it (novelty_monitor.py)
    novelty_minhash: dict[str, Any] = field(default_factory=dict)  # the [minhash] section the monitor measures with
    _teacher: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.executor, str):
            self.executor = make_executor(self.executor, self.ray_address)

    @property
    def teacher(self):
        if self._teacher is None:
            with _BUILDING:
                if self._teacher is None:
                    if self.teacher_factory is None:
                        raise RuntimeError("this stage needs a teacher but none was configured")
                    self._teacher = self.teacher_factory()
        return self._teacher

    @teacher.setter
    def teacher(self, teacher: Any) -> None:
        """A teacher built already (the refresh's, around the backend it pinged)."""
        self._teacher = teacher

    @property
    def has_teacher(self) -> bool:
        return self._teacher is not None

    def rng(self, record_id: str, purpose: str):
        return rng_for(self.seed, record_id, purpose)

    def with_executor(self, name: str) -> "RunContext":
        return self if name == self.executor.name else dataclasses.replace(self, executor=name)

    def with_teacher_view(self, view: Callable[[Any], Any]) -> "RunContext":
        """A copy whose teacher is `view(self.teacher)`, made on first use (the runner's per-shard counts)."""
        return dataclasses.replace(self, teacher_factory=ViewFactory(self, view), _teacher=None)

    def for_worker(self) -> "RunContext":
        """The copy a Ray worker gets: no teacher yet (it builds its own), no progress bar, runs where it is."""
        return dataclasses.replace(self, _teacher=None, progress=False, executor=LocalExecutor())

    def close(self) -> None:
        if self._teacher is not None:
            self._teacher.close()
            self._teacher = None
        self.executor.close()


def make_context(cfg: Config, paths: RunPaths, progress: bool = True, *,
                 teacher_factory: Callable[[], Any] | None = None, against: tuple[str, ...] = (),
                 budget: Budget | None = None, echo: Callable[[str], None] | None = None) -> RunContext:
    factory = teacher_factory or TeacherFactory(cfg.teacher, Path(paths.workdir).resolve(), cfg.run.seed)
    return RunContext(run_id=paths.run_id, seed=cfg.run.seed, workdir=paths.workdir,
                      teacher_factory=factory, progress=progress, executor=cfg.run.executor,
                      ray_address=cfg.run.ray_address, against=tuple(against), budget=budget or Budget(),
                      shard_rows=cfg.run.shard_rows, limit=cfg.run.limit, allow_partial=cfg.run.allow_partial,
                      echo=echo, min_novelty=cfg.run.min_novelty, novelty_minhash=dict(cfg.minhash))
