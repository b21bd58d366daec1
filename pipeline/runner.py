"""Runs a per-shard stage over an input dataset: resume, progress, merged stats.

A per-shard stage is an object with a `name`, a `settings()` dict (recorded in
the output's plan and manifest; a resume with other settings is refused) and
`process(rows, ctx) -> ShardResult`. The runner cuts the input into shards of
`shard_rows` rows in input order (so shard k is the same rows on every run),
skips shards whose done marker exists, and writes the manifest last.

A row whose teacher request failed for a reason outside the row (auth,
connection, timeout, 5xx, protocol: `TeacherError.outside`) is *unanswered*,
never a drop: a stage counts it in `ShardResult.unanswered`, a shard with any
unanswered row is neither staged nor marked done (the other shards still
commit), and at the end no manifest is written and TeacherUnavailable (exit
4) names the count. What did come back is in the response cache, so the
rerun pays only for the rest.

Shards overlap (`lookahead`): on the local executor up to 1 + lookahead
shards run `process` at once (threads), so the next shard's requests fill
the teacher's window while an earlier shard waits for its slowest answers;
the teacher's `concurrency` still caps all requests in flight together
(teacher/slots.py: the earliest shard's requests go first). Shards are
committed strictly in index order (a reorder buffer), so done markers,
progress and a stage's spend come in the same order as without overlap, and
at most 1 + lookahead shards' rows are held at once. A stage whose own budget
caps are set runs its shards one after the other (each cap is checked before
each shard starts, exactly), and so does a run whose teacher cannot take
concurrent calls (`teacher_overlaps`). Each shard's `teacher_*` counters are counted
from its own completions (teacher/tally.py). $DISTILL_SHARD_LOOKAHEAD sets
the lookahead (default 8; 0: one shard at a time).

Global stages (MinHash, embedding dedup, selection) do not use this loop; they
run explicit phases over `store.Dataset` and write with `store.DatasetWriter`.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from . import logs
from .config import ConfigError
from .errors import TeacherUnavailable
from .store import Dataset, DatasetWriter, Location, ShardSpec, StagedShard, fingerprint, stage_shard
from .teacher.base import TeacherUsage
from .teacher.budget import Budget
from .teacher.factory import CONCURRENT_BACKENDS
from .teacher.slots import first_by
from .teacher.tally import TallyTeacher


@dataclass
class ShardResult:
    kept: list[dict[str, Any]]
    rejected: list[dict[str, Any]] = field(default_factory=list)  # rows from records.rejected_row
    stats: dict[str, float] = field(default_factory=dict)        # extra counters, summed in the manifest
    unanswered: int = 0                                          # rows the teacher failed for outside reasons
    unanswered_reasons: dict[str, int] = field(default_factory=dict)  # error kind -> rows

    def leave_unanswered(self, reasons: dict[str, int]) -> None:
        """Count one unanswered row under the kinds of its failed requests (`base.unanswered_reasons`)."""
        self.unanswered += 1
        for kind in reasons or {"unknown": 1}:
            self.unanswered_reasons[kind] = self.unanswered_reasons.get(kind, 0) + 1


class ShardStage(Protocol):
    name: str

    def settings(self) -> dict[str, Any]: ...

    def process(self, rows: list[dict[str, Any]], ctx: Any) -> ShardResult: ...


class Progress:
    """Progress of one stage: a tqdm bar on a terminal, plain periodic lines otherwise.

    Without a terminal (cron, CI, a pipe) a line like
    `[orca] 1200/5000 rows (24%), 3.1 rows/s, 410 tok/s, 0 errors, ETA 20m` is
    printed every $DISTILL_PROGRESS_INTERVAL seconds (30), so a long job in a
    log never looks hung; with --log-json each such line is also a JSON event.
    """

    def __init__(self, total: int | None, desc: str, enabled: bool = True, *, stream=None):
        self.bar = None
        self.desc = desc
        self.total = total
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        if enabled and self.tty:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, unit="row", dynamic_ncols=True, file=self.stream)
        self.errors = 0
        self.tokens = 0
        self.rows = 0
        self.t0 = time.monotonic()
        self.interval = logs.progress_interval()
        self.last_line = self.t0
        self.rows_at_last_line = 0

    def update(self, rows: int, errors: int = 0, tokens: int = 0) -> None:
        self.errors += errors
        self.tokens += tokens
        self.rows += rows
        if self.bar is not None:
            rate = self.tokens / max(time.monotonic() - self.t0, 1e-9)
            self.bar.set_postfix(errors=self.errors, tok_s=f"{rate:.0f}", refresh=False)
            self.bar.update(rows)
        now = time.monotonic()
        if now - self.last_line >= self.interval:
            self.last_line = now
            self.rows_at_last_line = self.rows
            self._report(now)

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self.t0, 1e-9)
        rate = self.rows / elapsed
        done = f"{self.rows}/{self.total} rows ({100 * self.rows / self.total:.0f}%)" if self.total else f"{self.rows} rows"
        eta = ""
        if self.total and rate > 0 and self.rows < self.total:
            eta = f", ETA {_duration((self.total - self.rows) / rate)}"
        tok = f", {self.tokens / elapsed:.0f} tok/s" if self.tokens else ""  # only stages that report tokens
        return (f"[{self.desc}] {done}, {rate:.1f} rows/s{tok}, "
                f"{self.errors} errors, {_duration(elapsed)} elapsed{eta}")

    def _report(self, now: float) -> None:
        text = self.line(now)
        if self.enabled and not self.tty:
            logs.plain_line(text, self.stream)
        logs.event("progress", text, stage=self.desc, rows=self.rows, total=self.total, errors=self.errors,
                   tokens=self.tokens, elapsed_s=round(now - self.t0, 3))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif (self.enabled and not self.tty and self.rows != self.rows_at_last_line
              and time.monotonic() - self.t0 >= self.interval):
            logs.plain_line(self.line() + " - done", self.stream)  # the last word for a long stage in a log


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def teacher_usage(ctx: Any) -> TeacherUsage | None:
    """A snapshot of the teacher's counters (None while no teacher is built)."""
    return ctx.teacher.stats.copy() if ctx.has_teacher else None


UNANSWERED = "unanswered"  # the stats key of a shard that is not staged: {"rows": n, "reasons": {kind: n}}


DEFAULT_LOOKAHEAD = 8


def shard_lookahead() -> int:
    """Shards started ahead of the next one to commit: $DISTILL_SHARD_LOOKAHEAD, default 8 (0: none)."""
    raw = os.environ.get("DISTILL_SHARD_LOOKAHEAD", "").strip()
    if not raw:
        return DEFAULT_LOOKAHEAD
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"DISTILL_SHARD_LOOKAHEAD={raw!r} is not a whole number of shards (e.g. 8; 0: "
                          "one shard at a time)") from None
    if value < 0:
        raise ConfigError(f"DISTILL_SHARD_LOOKAHEAD={raw!r} must be 0 or more shards")
    return value


def teacher_overlaps(ctx: Any) -> bool:
    """Whether shards may overlap: the run's teacher takes concurrent calls (`concurrent_calls` on a built
    one; before it is built, a configured backend in CONCURRENT_BACKENDS). A live teacher
    that does not (a scripted test teacher) gets its shards one at a time, in the order they were always asked."""
    if ctx.has_teacher:
        return bool(getattr(ctx.teacher, "concurrent_calls", False))
    section = getattr(ctx.teacher_factory, "section", None)
    return section is not None and section.backend in CONCURRENT_BACKENDS


def process_shard(stage: ShardStage, spec: ShardSpec, out: Location, ctx: Any) -> tuple[StagedShard | None, dict[str, Any]]:
    """The per-shard body, the same in every executor's process: read, process, account, stage.
    A shard with unanswered rows is not staged: (None, stats with UNANSWERED)."""
    return stage_result(stage, spec, out, *compute_shard(stage, spec, ctx))


def compute_shard(stage: ShardStage, spec: ShardSpec, ctx: Any) -> tuple[ShardResult, dict[str, Any]]:
    """Read, process and account one shard, writing nothing. Safe to run for several shards at once on
    one `ctx` (the local executor's overlap): the shard's teacher counts are its own (TallyTeacher)."""
    rows = spec.read_rows()
    view = ctx.with_teacher_view(TallyTeacher)
    ts = time.monotonic()
    with first_by(spec.index):  # its requests before later shards' (teacher/slots.py)
        result = stage.process(rows, view)
    stats: dict[str, Any] = {"rows_in": len(rows), "seconds": round(time.monotonic() - ts, 3)}
    if view.has_teacher:
        stats.update(view.teacher.stats.marker())
    elif ctx.has_teacher:
        stats.update(TeacherUsage().marker())
    for k, v in result.stats.items():
        stats[k] = stats.get(k, 0) + v
    for r in result.rejected:  # filtering stages must account for every row: kept, or rejected with a reason
        if not r.get("drop_reason"):
            raise ValueError(f"stage {stage.name}: rejected row {r.get('id')} has no drop_reason")
    if result.unanswered:
        stats[UNANSWERED] = {"rows": result.unanswered, "reasons": dict(result.unanswered_reasons)}
    return result, stats


def stage_result(stage: ShardStage, spec: ShardSpec, out: Location, result: ShardResult,
                 stats: dict[str, Any]) -> tuple[StagedShard | None, dict[str, Any]]:
    """`compute_shard`'s result under temporary names for the commit; None when rows were left unanswered."""
    if result.unanswered:
        return None, stats
    return stage_shard(out, spec.index, result.kept, result.rejected, stage=stage.name), stats


def run_shards(stage: ShardStage, input_ds: Dataset, out: str | Path | Location, ctx: Any, *,
               shard_rows: int = 1000, limit: int | None = None, executor: str | None = None,
               manifest_extra: dict[str, Any] | None = None, plan: dict[str, Any] | None = None,
               budget: Budget | None = None,
               spend: Callable[[Budget, dict[str, Any]], None] | None = None,
               lookahead: int | None = None) -> dict[str, Any]:
    """Run `stage` over every not-yet-done shard of `input_ds` on `ctx.executor`; return the manifest.

    The one shard loop: plan, skip done, commit as results arrive, manifest
    last. `executor` ("local" or "ray") overrides the context's for this call.
    `plan` replaces the folder's resume plan (a stage that also writes the
    folder itself, like Evol-Instruct's rounds, passes its own).

    `budget`: a stage's own caps (a child of ctx.budget), in shard order:
    `spend(budget, marker)` after each commit; before each shard, a limit
    `budget.exhausted_by` names stops the loop, noted, with no manifest (a
    rerun with more room continues) and `{"stopped_by": limit}` returned.
    Only an `ordered` executor can keep such caps; others refuse them.

    `lookahead`: shards started ahead of the next to commit (default
    `shard_lookahead()`); none while such a cap is set, or when the teacher
    cannot take concurrent calls (`teacher_overlaps`).
    """
    if executor is not None:
        ctx = ctx.with_executor(executor)
    capped = budget is not None and any(v is not None for v in (
        budget.max_rows, budget.max_requests, budget.max_tokens, budget.max_seconds))
    in_order = capped and ctx.executor.ordered
    ahead = shard_lookahead() if lookahead is None else max(int(lookahead), 0)
    if not teacher_overlaps(ctx):
        ahead = 0
    caps = "" if budget is None else " / ".join(f"{k} {v}" for k, v in budget.own_caps.items() if v is not None)
    if budget is not None and not in_order and caps:
        raise ConfigError(f"{stage.name}: its own budget ({caps}) is counted shard by shard in order, which the "
                          f"{ctx.executor.name} executor's parallel shards do not do: run it with "
                          "--executor local (a refresh budget works with both)")
    settings = stage.settings()
    writer = DatasetWriter(out, stage.name, plan=plan or {
        "input": str(input_ds.path), "input_fingerprint": fingerprint(input_ds), "shard_rows": shard_rows,
        "limit": limit, "settings": settings})
    specs = input_ds.plan(shard_rows, limit)
    bar = Progress(sum(s.rows for s in specs), stage.name, ctx.progress)
    t0 = time.monotonic()
    todo = [s for s in specs if not writer.is_done(s.index)]
    bar.update(sum(s.rows for s in specs) - sum(s.rows for s in todo))

    unanswered: dict[int, dict[str, Any]] = {}

    def commit(spec: ShardSpec, staged: StagedShard | None, stats: dict[str, Any]) -> None:
        if staged is None:  # rows the teacher left unanswered: not done, retried on the next run
            unanswered[spec.index] = stats[UNANSWERED]
            return
        marker = writer.commit(staged, stats)
        if spend is not None:
            spend(budget, marker)
        bar.update(spec.rows, errors=marker.get("teacher_errors", 0), tokens=marker.get("teacher_completion_tokens", 0))

    stopped = None
    try:
        if not in_order:
            extra = ctx.executor.map_shards(stage, todo, writer.loc, ctx, commit, lookahead=0 if capped else ahead)
        else:
            extra = {}
            for spec in todo:
                if (stopped := budget.exhausted_by) is not None:
                    budget.note(stopped)
                    break
                extra.update(ctx.executor.map_shards(stage, [spec], writer.loc, ctx, commit))
    finally:
        bar.close()
        writer.clean_temporaries()  # what dead or zombie attempts staged; no worker runs now
    if unanswered:
        raise TeacherUnavailable(unanswered_line(stage.name, list(unanswered.values())))
    if stopped is not None:
        return {"stopped_by": stopped}
    teacher = extra.pop("teacher", None)
    if teacher is None and ctx.has_teacher:
        teacher = {"backend": ctx.teacher.backend, "model": ctx.teacher.model}
    extra.update({
        "run_id": ctx.run_id,
        "input": str(input_ds.path),
        "settings": settings,
        "shard_rows": shard_rows,
        "limit": limit,
        "shards_skipped_on_resume": len(specs) - len(todo),
        "wall_seconds_this_invocation": round(time.monotonic() - t0, 3),
    })
    if teacher is not None:
        extra["teacher"] = teacher
    extra.update(manifest_extra or {})
    return writer.write_manifest(**extra)


def unanswered_line(stage: str, shards: list[dict[str, Any]]) -> str:
    """"orca: 12 rows in 2 shards unanswered (timeout: 12); ..." from the shards' UNANSWERED stats."""
    reasons: Counter = Counter()
    for u in shards:
        reasons.update(u["reasons"])
    rows = sum(u["rows"] for u in shards)
    why = ", ".join(f"{k}: {v}" for k, v in reasons.most_common())
    return (f"{stage}: {rows} rows in {len(shards)} shard(s) unanswered ({why}); nothing of them was marked "
            "done; rerun to retry them (answers that came back are in the response cache)")


def summarize_drops(manifest: dict[str, Any]) -> str:
    drops = Counter(manifest.get("drops", {}))
    if not drops:
        return "no drops"
    return ", ".join(f"{k}={v}" for k, v in drops.most_common())
