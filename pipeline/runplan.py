"""Chains the default plan's steps over one run folder and writes the run summary.

Each step reads the previous step's folder and writes `<run>/<step>/`. A step
whose folder already has its manifest is complete and is not run again, so a
rerun after a crash resumes at the first unfinished step (which itself resumes
at its first unfinished shard). `run_summary.json` is written last.

Before the first step, everything a run can be refused for is checked at
once (`plan.check_steps`): each section of the steps that will run, the
files they name, the --input and the first step's input. A typo in [export]
then costs a second, not five stages of teacher calls.

One `distill run` per run folder: it holds `<run>/.lock` throughout (a second
exits 6, naming the holder's pid), and each step holds its own folder's lock.

`[run] min_novelty` acts during generation: a generating stage with a novelty
monitor (Self-Instruct; novelty_monitor.py) stops generating once a shard adds
fewer novel rows per 1k generated, finishes with what it has and records
`stopped` in its manifest; the run then goes on through dedup, scoring,
selection and export, so a release still comes out, and the summary's
`stopped` repeats that record (with the step). A rerun finds the stage done and
generates no more. After each dedup step (minhash, semdedup) the after-dedup
curve (marginal.py) is checked too, for generators without a monitor: under
the threshold it is only recorded (`novelty_warning`), never a cut-off.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from . import logs, marginal
from .config import Config
from .context import RunPaths, make_context
from .errors import BudgetExhausted, ConfigError, TeacherUnavailable
from .plan import check_first_input, check_steps, default_plan, optional_off
from .records import now_utc
from .stage import StageSpec
from .store import Dataset, RunLock, atomic_write_json, fingerprint, read_json, require_finished, set_aside
from .store.lock import LOCK_NAME
from .teacher.factory import BATCH_BACKENDS
from .teacher.ping import preflight
from .teacher.pricing import Prices


def _check_names(plan: list[StageSpec], names: list[str], flag: str) -> None:
    known = [s.name for s in plan]
    for n in names:
        if n not in known:
            raise ConfigError(f"{flag} {n}: unknown stage; stages are {', '.join(known) or '(none installed)'}")


def run_plan(cfg: Config, paths: RunPaths, *, skip: list[str] = (), start: str | None = None,
             input: Path | None = None, progress: bool = True,
             echo: Callable[[str], None] = print, plan: list[StageSpec] | None = None,
             max_cost: float | None = None) -> dict[str, Any]:
    """`max_cost`: the run's spend cap in the teacher's prices (`--max-cost`; ConfigError without prices)."""
    plan = default_plan() if plan is None else plan
    if max_cost is not None:
        Prices.required(cfg.teacher, "--max-cost", cfg.source)
    if not plan:
        raise ConfigError("no stages are installed in this version; nothing to run")
    skip = list(skip) + list(cfg.pipeline.get("skip", []))
    skip += optional_off(cfg, plan)
    current: Path | None = Path(input) if input else None
    to_do = _validate_first(cfg, paths, plan, skip, start, current)
    lock = RunLock(paths.run_dir / LOCK_NAME, holder="another `distill run` is running this run",
                   hint="wait for it to finish, or start another with --new or --run-id").acquire()
    try:
        return run_steps(cfg, paths, plan, skip, start, current, progress, echo,
                         ping=any(s.needs_teacher for s in to_do), max_cost=max_cost)
    finally:
        lock.release()


def run_steps(cfg: Config, paths: RunPaths, plan: list[StageSpec], skip: list[str], start: str | None,
              current: Path | None, progress: bool, echo: Callable[[str], None], *,
              ping: bool = False, max_cost: float | None = None) -> dict[str, Any]:
    """The steps of `run_plan`, under the run's lock; `ping`: a step with work to do needs the teacher."""
    ctx = make_context(cfg, paths, progress=progress)
    if max_cost is not None:  # refused requests are unanswered (budget.py), so the rerun continues them
        ctx.budget = ctx.executor.budget().cap_cost(max_cost, Prices.required(cfg.teacher, "--max-cost", cfg.source),
                                                    resumable=True, batch=cfg.teacher.backend in BATCH_BACKENDS)
        ctx.teacher_factory = ctx.teacher_factory.with_budget(ctx.budget)
    if ping:
        try:
            preflight(ctx.teacher_factory)  # once, before the first stage: a dead teacher is exit 4 in seconds
        except BaseException:
            ctx.close()
            raise
    started = start is None
    steps: list[dict[str, Any]] = []
    stopped: dict[str, Any] | None = None
    warning: dict[str, Any] | None = None
    t_run = time.monotonic()
    try:
        for step in plan:
            started = started or step.name == start
            if not started or step.name in skip:
                steps.append({"stage": step.name, "status": "skipped"})
                continue
            out = paths.stage_dir(step.name)
            t0 = time.monotonic()
            stale = _stale_reason(out, current)
            if stale:
                kept = set_aside(out, paths.run_dir / ".stale")  # never deleted: it may hold paid-for answers
                echo(f"[{step.name}] {stale}: redoing it (the old output is kept in {kept})")
            if (out / "_manifest.json").exists():
                manifest = Dataset(out).manifest()
                status = "already done"
            else:
                echo(f"[{step.name}] {step.doc} -> {out}")
                if ctx.executor.distributed and step.local_only:
                    echo(f"[{step.name}] runs in this process, not on {ctx.executor.name.capitalize()}: {step.local_only}")
                logs.event("stage_start", f"{step.name} started", stage=step.name, run_id=paths.run_id, out=str(out))
                manifest = step.run_step(cfg, current, out, ctx)
                status = "done"
            steps.append({"stage": step.name, "status": status, "out": str(out),
                          "rows_in": manifest.get("rows_in"), "rows_out": manifest.get("rows_out"),
                          "rows_rejected": manifest.get("rows_rejected"), "drops": manifest.get("drops", {}),
                          "seconds": round(time.monotonic() - t0, 2)})
            echo(f"[{step.name}] {status}: {manifest.get('rows_out')} rows out, "
                 f"{manifest.get('rows_rejected', 0)} rejected")
            logs.event("stage_end", f"{step.name} {status}", **steps[-1])
            current = out
            if manifest.get("stopped") and not stopped:
                stopped = dict(manifest["stopped"], step=step.name)
                echo(f"[run] {stopped['message']}; the run goes on with what it generated")
                logs.event("run_stopped", stopped["message"], run_id=paths.run_id, **stopped)
            elif not stopped and (note := _novelty_note(cfg, paths, step.name)):
                warning = note
                echo(f"[run] note after {step.name}: {note['message']} (recorded; the run goes on)")
    except TeacherUnavailable:
        if "cost" not in ctx.budget.hit:
            raise
        raise BudgetExhausted(f"cost cap reached: {ctx.budget.cost:.4f} of {max_cost:g} spent "
                              f"({ctx.budget.refused} requests not sent); finished shards are kept: rerun to continue "
                              "(--max-cost counts each invocation's own spend; answers paid for are cached)") from None
    finally:
        teacher = ctx.teacher.stats.to_dict() if ctx.has_teacher else {}
        ctx.close()
    summary = {
        "run_id": paths.run_id,
        "finished_at": now_utc().isoformat(),
        "seconds": round(time.monotonic() - t_run, 2),
        "steps": steps,
        "teacher": teacher,
        **({"budget": ctx.budget.to_dict()} if max_cost is not None else {}),
        **({"stopped": stopped} if stopped else {}),
        **({"novelty_warning": warning} if warning else {}),
        "final_dataset": str(current) if current else None,
        "final_rows": _final_rows(current),
    }
    atomic_write_json(paths.run_dir / "run_summary.json", summary)
    logs.event("run_end", f"run {paths.run_id} finished", run_id=paths.run_id, seconds=summary["seconds"],
               final_rows=summary["final_rows"], final_dataset=summary["final_dataset"])
    return summary


def _novelty_note(cfg: Config, paths: RunPaths, step: str) -> dict[str, Any] | None:
    """The `novelty_warning` record when `step` is a dedup step and the newest shard of the after-dedup curve
    is under `[run] min_novelty` (a generator without a monitor: nothing stopped it)."""
    if cfg.run.min_novelty is None or step not in marginal.DEDUP:
        return None
    points = marginal.run_curve(paths.run_dir)
    if not points or points[-1]["novel_per_1k"] >= cfg.run.min_novelty:
        return None
    last = points[-1]
    return {"reason": "min_novelty_after_dedup", "after": step, "novel_per_1k": last["novel_per_1k"],
            "min_novelty": cfg.run.min_novelty, "rows_generated": last["rows_generated"],
            "message": f"the newest shard added {last['novel_per_1k']:g} novel rows per 1k generated, under "
                       f"[run] min_novelty = {cfg.run.min_novelty:g} ({marginal.sentence(points)})"}


def _validate_first(cfg: Config, paths: RunPaths, plan: list[StageSpec], skip: list[str], start: str | None,
                   input: Path | None) -> list[StageSpec]:
    """Everything a run can be refused for, before any stage starts: the --skip/--from names, the
    --input dataset, the section of every step not skipped (skipped ones need not be valid), the files
    those sections name (for the steps that still have work to do) and the first step's input.
    Returns the steps that still have work to do."""
    _check_names(plan, skip, "--skip")
    if start:
        _check_names(plan, [start], "--from")
    if input is not None:
        require_finished(input, allow_partial=cfg.run.allow_partial)
    names = [s.name for s in plan]
    first = names.index(start) if start else 0
    steps = [s for s in plan[first:] if s.name not in skip]
    with_work = _with_work(paths, steps, input)
    check_steps(cfg, steps, input=input, files_of=with_work)
    check_first_input(steps, input)
    return [s for s in steps if s.name in with_work]


def _with_work(paths: RunPaths, steps: list[StageSpec], input: Path | None) -> set[str]:
    """The steps that will run rather than be found done: from the first one with no manifest (or a
    stale one) on, as every later step's input is then rebuilt."""
    current = input
    for i, step in enumerate(steps):
        out = paths.stage_dir(step.name)
        if not (out / "_manifest.json").exists() or _stale_reason(out, current):
            return {s.name for s in steps[i:]}
        current = out
    return set()


def _stale_reason(out: Path, input: Path | None) -> str | None:
    """Why a step's output no longer follows from its input, or None when it does."""
    done = out / "_manifest.json"
    if input is None:
        return None
    if not done.exists():  # unfinished: stale when its input changed since it was started
        try:
            started = read_json(out / "_plan.json").get("input_fingerprint")
        except (OSError, ValueError, AttributeError):
            return None  # no plan yet, or a corrupt one: the step's writer says so
        if started and (input / "_manifest.json").exists() and started != fingerprint(Dataset(input)):
            return f"its input {input.name} changed since it was started"
        return None
    recorded = read_json(done).get("input")
    if recorded and Path(recorded).resolve() != Path(input).resolve():
        return f"it was built from {recorded}, not {input}"
    upstream = input / "_manifest.json"
    if upstream.exists() and upstream.stat().st_mtime_ns > done.stat().st_mtime_ns:
        return f"its input {input.name} was rebuilt after it"
    return None


def _final_rows(current: Path | None) -> int:
    """Rows of the last folder: a release folder (export: manifest.json) or a dataset folder."""
    if current is None:
        return 0
    release = current / "manifest.json"
    if release.exists() and not (current / "_manifest.json").exists():
            return int(read_json(release).get("rows", 0))
    return Dataset(current).num_rows()
