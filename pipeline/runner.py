"""Runs a per-shard stage over an input dataset: resume, progress, merged stats.

A per-shard stage is an object with a `name`, a `settings()` dict (recorded in
the output's plan and manifest; a resume with other settings is refused) and
`process(rows, ctx) -> ShardResult`. The runner cuts the input into shards of
`shard_rows` rows in input order (so shard k is the same rows on every run),
skips shards whose done marker exists, and writes the manifest last.

Global stages (MinHash, embedding dedup, selection) do not use this loop; they
run explicit phases over `store.Dataset` and write with `store.DatasetWriter`.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from .seeding import rng_for
from .store import Dataset, DatasetWriter


@dataclass
class ShardResult:
    kept: list[dict[str, Any]]
    rejected: list[dict[str, Any]] = field(default_factory=list)  # rows from records.rejected_row
    stats: dict[str, float] = field(default_factory=dict)        # extra counters, summed in the manifest


class ShardStage(Protocol):
    name: str

    def settings(self) -> dict[str, Any]: ...

    def process(self, rows: list[dict[str, Any]], ctx: "StageContext") -> ShardResult: ...


@dataclass
class StageContext:
    """What a stage may use besides its rows: run identity, seeding, the teacher."""

    run_id: str
    seed: int = 0
    workdir: Path = Path("work")
    teacher_factory: Callable[[], Any] | None = None
    progress: bool = True
    executor: str = "local"          # run.executor: where run_shards (and global stages' phases) run
    ray_address: str | None = None   # run.ray_address, for executor = "ray"
    _teacher: Any = None

    @property
    def teacher(self):
        if self._teacher is None:
            if self.teacher_factory is None:
                raise RuntimeError("this stage needs a teacher but none was configured")
            self._teacher = self.teacher_factory()
        return self._teacher

    @property
    def has_teacher(self) -> bool:
        return self._teacher is not None

    def rng(self, record_id: str, purpose: str):
        return rng_for(self.seed, record_id, purpose)

    def close(self) -> None:
        if self._teacher is not None:
            self._teacher.close()
            self._teacher = None


def iter_shards(ds: Dataset, shard_rows: int, limit: int | None = None) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """(index, rows) in input order; shard k always holds the same rows."""
    buf: list[dict[str, Any]] = []
    index = 0
    seen = 0
    for row in ds.iter_rows():
        if limit is not None and seen >= limit:
            break
        buf.append(row)
        seen += 1
        if len(buf) == shard_rows:
            yield index, buf
            index += 1
            buf = []
    if buf:
        yield index, buf


class Progress:
    """A tqdm bar on a terminal (rows, rate, ETA, errors so far); silent otherwise."""

    def __init__(self, total: int | None, desc: str, enabled: bool = True):
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, unit="row", dynamic_ncols=True)
        self.errors = 0
        self.tokens = 0
        self.t0 = time.monotonic()

    def update(self, rows: int, errors: int = 0, tokens: int = 0) -> None:
        self.errors += errors
        self.tokens += tokens
        if self.bar is not None:
            rate = self.tokens / max(time.monotonic() - self.t0, 1e-9)
            self.bar.set_postfix(errors=self.errors, tok_s=f"{rate:.0f}", refresh=False)
            self.bar.update(rows)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def teacher_snapshot(ctx: StageContext) -> dict[str, Any]:
    return ctx.teacher.stats.to_dict() if ctx.has_teacher else {}


def _delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, int]:
    keys = ("requests", "sent", "cache_hits", "errors", "retries", "prompt_tokens", "completion_tokens")
    return {f"teacher_{k}": int(after.get(k, 0)) - int(before.get(k, 0)) for k in keys if k in after}


def run_shards(stage: ShardStage, input_ds: Dataset, out: str | Path, ctx: StageContext, *,
               shard_rows: int = 1000, limit: int | None = None, executor: str | None = None,
               manifest_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run `stage` over every not-yet-done shard of `input_ds`; return the manifest.

    `executor` (default: `ctx.executor`) "ray" runs the same shards as Ray
    tasks (pipeline/executors/ray_shards.py), with the same folder semantics.
    """
    executor = executor or ctx.executor
    if executor == "ray":
        from .executors.ray_shards import run_shards_ray
        return run_shards_ray(stage, input_ds, out, ctx, shard_rows=shard_rows, limit=limit,
                              manifest_extra=manifest_extra)
    if executor != "local":
        raise ValueError(f"unknown executor {executor!r}; use 'local' or 'ray'")
    settings = stage.settings()
    writer = DatasetWriter(out, stage.name, plan={
        "input": str(input_ds.path), "shard_rows": shard_rows, "limit": limit, "settings": settings})
    total = input_ds.num_rows() if limit is None else min(limit, input_ds.num_rows())
    bar = Progress(total, stage.name, ctx.progress)
    t0 = time.monotonic()
    skipped = 0
    try:
        for index, rows in iter_shards(input_ds, shard_rows, limit):
            if writer.is_done(index):
                skipped += 1
                bar.update(len(rows))
                continue
            before = teacher_snapshot(ctx)
            ts = time.monotonic()
            result = stage.process(rows, ctx)
            stats: dict[str, Any] = {"rows_in": len(rows), "seconds": round(time.monotonic() - ts, 3)}
            stats.update(_delta(teacher_snapshot(ctx), before))
            for k, v in result.stats.items():
                stats[k] = stats.get(k, 0) + v
            _check_accounting(stage.name, rows, result)
            writer.write_shard(index, result.kept, result.rejected, stats)
            bar.update(len(rows), errors=stats.get("teacher_errors", 0),
                       tokens=stats.get("teacher_completion_tokens", 0))
    finally:
        bar.close()
    extra = {
        "run_id": ctx.run_id,
        "input": str(input_ds.path),
        "settings": settings,
        "shard_rows": shard_rows,
        "limit": limit,
        "shards_skipped_on_resume": skipped,
        "wall_seconds_this_invocation": round(time.monotonic() - t0, 3),
    }
    if ctx.has_teacher:
        t = ctx.teacher
        extra["teacher"] = {"backend": t.backend, "model": t.model}
    extra.update(manifest_extra or {})
    return writer.write_manifest(**extra)


def _check_accounting(stage: str, rows: list[dict[str, Any]], result: ShardResult) -> None:
    """Filtering stages must account for every input row: kept or rejected with a reason."""
    for r in result.rejected:
        if not r.get("drop_reason"):
            raise ValueError(f"stage {stage}: rejected row {r.get('id')} has no drop_reason")


def summarize_drops(manifest: dict[str, Any]) -> str:
    drops = Counter(manifest.get("drops", {}))
    if not drops:
        return "no drops"
    return ", ".join(f"{k}={v}" for k, v in drops.most_common())
