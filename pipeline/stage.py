"""The stage contract: what every stage package exports, and the one builder of its typer command.

Each stage package exports `SPEC = StageSpec(...)`: its name (the folder
name, the config section, the `--skip`/`--from` name), its config model, one
`run(input, out, cfg, ctx)` entry point, its closing summary, whether it
needs a teacher, and `check`: the files its section names, read before any
work. `plan.py` is the list of specs in pipeline order, and
`cli.py` registers each spec's command. Per-shard stages implement
`process(rows, ctx)` and leave the shard loop to `runner.run_shards`; global
stages (minhash, semdedup, select) are explicit phases written as a table
of contents.

`stage_command(spec, ...)` builds the command: the stage's own flags plus the
shared ones (config, workdir, run id, limit, shard rows, seed, executor,
progress, --overwrite, --allow-partial) and the one body every stage command
has: load the config with the flags on top, resolve the run, make the
context, run, print the summary.

`StageSpec.run_section` is the one door to a stage's `run`, for its command,
`distill run` and `refresh` alike. Before any work it refuses, in this
order: an input inside the output, an unfinished input (unless
allow_partial), an output holding other data (unless --overwrite), and (for
a command, `ping=True`) a teacher that does not answer the ping. Then it
takes the output folder's lock (a second writer exits 6), and only then does
--overwrite move the old contents aside.
"""

from __future__ import annotations

import inspect
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable

import typer

from .cli_common import (
    AllowPartialOpt,
    ConfigOpt,
    ExecutorOpt,
    LimitOpt,
    NoProgressOpt,
    OutOpt,
    OverwriteOpt,
    RayAddressOpt,
    RunIdOpt,
    SeedOpt,
    ShardRowsOpt,
    WorkdirOpt,
)
from .config import Config, referenced_path, stage_config
from .context import RunContext, load, make_context, resolve_run
from .errors import InputFileError
from .store import (
    Dataset,
    allowing_partial,
    check_out,
    clear_out,
    folder_lock,
    input_inside,
    record_partial,
    require_finished,
)
from .teacher.ping import preflight

Manifest = dict[str, Any]


@dataclass(frozen=True)
class StageSpec:
    name: str                                                     # folder, config section, --skip/--from name
    config: type | None                                           # the pydantic model of its [section], if it has one
    run: Callable[[Path | None, Path, Any, RunContext], Manifest]  # one signature for every stage
    summary: Callable[[Manifest, Path], str]                       # the command's closing lines
    doc: str                                                      # one line, printed by `distill run`
    needs_teacher: bool = False
    needs_input: bool = True                                      # False: the first stage (reads the seeds)
    missing_input: str = "an input dataset: run it after the stage before it, or pass --input"  # when it has none
    local_only: str | None = None                                 # why it stays in the driver with --executor ray
    # check(cfg, its validated section, its input when it is the first step): the files and datasets its section
    # names, read as the stage will read them; `distill run` and `refresh` call it before any work (plan.check_steps)
    check: Callable[[Config, Any, Path | None], None] | None = None
    release: bool = False                                         # writes a release folder (export), not a dataset
    optional: bool = False                                        # `distill run` runs it only when [section] enabled = true
    inherits: Callable[[Config], dict[str, Any]] | None = None    # values its section takes from others (hard: a judge)

    def run_step(self, cfg: Config, input: Path | None, out: Path, ctx: RunContext) -> Manifest:
        """`distill run`'s step: this stage's [section] over the previous step's folder."""
        if input is None and self.needs_input:
            raise InputFileError(f"{self.name} needs {self.missing_input}")
        inherited = self.inherits(cfg) if self.inherits is not None else {}
        section = stage_config(cfg, self.name, self.config, **inherited) if self.config is not None else None
        return self.run_section(cfg, input, out, section, ctx)

    def run_section(self, cfg: Config, input: Path | None, out: Path, section: Any, ctx: RunContext, *,
                    ping: bool = False) -> Manifest:
        """`run` under `cfg`'s [run] (shard rows, limit, allow_partial), whoever built the context, behind the
        checks of the module docstring. `ping`: a teacher-using stage pings its teacher after the checks and
        before anything is moved or written (`distill run` pings once for all its steps)."""
        ctx.shard_rows, ctx.limit, ctx.allow_partial = cfg.run.shard_rows, cfg.run.limit, cfg.run.allow_partial
        reads = input if self.needs_input else None
        input_inside(reads, out)
        partial = require_finished(reads, allow_partial=ctx.allow_partial) if reads is not None else {}
        if not ctx.overwrite:
            check_out(out, self.name, release=self.release)  # before the lock: a refusal leaves no trace
        if ping and self.needs_teacher:
            preflight(ctx.teacher_factory)  # a dead teacher is exit 4 now, not after a shard of failures
        with folder_lock(out):
            if ctx.overwrite and (kept := clear_out(out)) is not None and ctx.echo is not None:
                ctx.echo(f"[{self.name}] --overwrite: the old contents of {out} are kept in {kept}")
            check_out(out, self.name, release=self.release)  # again, now that no other writer can change it
            with allowing_partial(reads) if partial else nullcontext():
                manifest = self.run(input, out, section, ctx)
            if partial:
                manifest = record_partial(out, manifest, partial, release=self.release)
        return manifest


SHARED: dict[str, tuple[Any, Any]] = {
    "config": (ConfigOpt, None), "workdir": (WorkdirOpt, None), "run_id": (RunIdOpt, None),
    "limit": (LimitOpt, None), "shard_rows": (ShardRowsOpt, None), "seed": (SeedOpt, None),
    "executor": (ExecutorOpt, None), "ray_address": (RayAddressOpt, None), "no_progress": (NoProgressOpt, False),
    "overwrite": (OverwriteOpt, False), "allow_partial": (AllowPartialOpt, False),
}
RUN_FLAGS = ("workdir", "run_id", "limit", "shard_rows", "seed", "executor", "ray_address", "allow_partial")


def stage_command(spec: StageSpec, *, help: str, options: dict[str, tuple[Any, Any]],
                  dataset_help: str | None = None, shared: tuple[str, ...] = tuple(SHARED),
                  overrides: Callable[..., dict[str, Any]] | None = None) -> Callable[..., None]:
    """The typer command of `spec`: `options` are its own flags as {name: (Annotated type, default)};
    `overrides(cfg, **flags)` maps them to its config section (default: same names, None left out).
    Every command gets --overwrite, and one that reads a dataset --allow-partial, whatever `shared` says."""
    shared = tuple(dict.fromkeys([*shared, "overwrite", *(["allow_partial"] if dataset_help is not None else [])]))

    def command(**kw: Any) -> None:
        dataset = kw.pop("dataset", None)
        out = kw.pop("out", None)
        flags = {k: kw.pop(k) for k in RUN_FLAGS if k in shared}
        config, no_progress = kw.pop("config", None), kw.pop("no_progress", False)
        overwrite = kw.pop("overwrite", False)
        cfg = load(config, **flags)
        section = stage_config(cfg, spec.name, spec.config, **(overrides(cfg, **kw) if overrides else kw))
        paths = resolve_run(cfg, flags.get("workdir"), flags.get("run_id"))
        target = out or paths.stage_dir(spec.name)
        ctx = make_context(cfg, paths, progress=not no_progress)
        ctx.echo = lambda s: typer.echo(s, err=True)
        ctx.overwrite = overwrite
        try:
            if spec.check is not None:
                spec.check(cfg, section, dataset)  # the files its section names, before any work
            manifest = spec.run_section(cfg, dataset, target, section, ctx, ping=True)
        finally:
            ctx.close()
        typer.echo(spec.summary(manifest, target))

    P = inspect.Parameter
    params = []
    if dataset_help is not None:
        params.append(P("dataset", P.POSITIONAL_OR_KEYWORD, annotation=Annotated[Path, typer.Argument(help=dataset_help)]))
    params.append(P("out", P.POSITIONAL_OR_KEYWORD, default=None, annotation=OutOpt))
    for name, (annotation, default) in [*options.items(), *((n, SHARED[n]) for n in shared)]:
        params.append(P(name, P.POSITIONAL_OR_KEYWORD, default=default, annotation=annotation))
    command.__signature__ = inspect.Signature(params)  # what typer reads the options from
    command.__doc__ = help
    command.__name__ = f"{spec.name}_cmd"
    return command


def referenced_dataset(cfg: Config, section: str, key: str, value: str | Path | None) -> None:
    """A finished dataset named by `[section] key` (an `against` release), when one is named."""
    if value:
        referenced_path(cfg, section, key, value, kind="dir")
        Dataset(value, require_complete=True)

