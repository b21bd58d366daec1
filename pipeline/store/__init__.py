"""Dataset folders: Parquet shards, atomic writes, done-markers, rejected rows, manifests.

Layout of one dataset folder (written by one stage):

    part-00000.parquet ...      kept rows, record schema
    rejected/part-00000.parquet rows dropped by this stage, with drop_stage/reason/detail
    _done/part-00000.json       per-shard completion marker with that shard's stats
    _plan.json                  how the folder was started (shard size, input), checked on resume
    _manifest.json              written last: the folder is complete when it exists

Every file is written to a hidden temporary name, fsynced and renamed into
place, so a kill at any moment leaves either the old state or the new one.
Readers stream record batches; nothing loads a whole dataset.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from .. import records
from .atomic import (StoreWriteError, atomic_write_bytes, atomic_write_json, atomic_write_table, explain_os_error,
                     fsync_dir, read_json, tmp_name)

__all__ = ["Dataset", "DatasetError", "DatasetWriter", "StoreWriteError", "atomic_write_bytes", "atomic_write_json",
           "atomic_write_table", "fsync_dir", "read_json", "shard_name", "tmp_name"]

MANIFEST = "_manifest.json"
PLAN = "_plan.json"
DONE_DIR = "_done"
REJECTED_DIR = "rejected"
_PART = re.compile(r"^part-(\d{5,})\.parquet$")


class DatasetError(ValueError):
    """A folder that is not a usable dataset; the message names the folder and the problem."""


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


class ShardReader:
    """Reading a dataset's rows shard by shard; a subclass sets `shards` and `schema` and opens a shard in `file`."""

    shards: list
    schema: pa.Schema

    def file(self, shard) -> pq.ParquetFile:
        raise NotImplementedError

    def num_rows(self) -> int:
        return sum(self.file(s).metadata.num_rows for s in self.shards)

    def iter_batches(self, columns: list[str] | None = None, batch_size: int = 8192) -> Iterator[pa.RecordBatch]:
        for shard in self.shards:
            yield from self.file(shard).iter_batches(batch_size=batch_size, columns=columns)

    def iter_rows(self, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
        for batch in self.iter_batches(columns=columns, batch_size=1024):
            yield from batch.to_pylist()

    def read(self, columns: list[str] | None = None) -> pa.Table:
        """Whole dataset as one table: for small datasets and tests only."""
        if not self.shards:
            return self.schema.empty_table().select(columns or self.schema.names)
        return pa.concat_tables(self.file(s).read(columns=columns) for s in self.shards)


class Dataset(ShardReader):
    """A dataset folder opened for reading. `Dataset(path)` validates it."""

    def __init__(self, path: str | Path, *, require_complete: bool = False,
                 schema: pa.Schema = records.SCHEMA):
        self.path = Path(path)
        self.schema = schema
        if not self.path.exists():
            raise DatasetError(f"{self.path}: no such dataset folder")
        if not self.path.is_dir():
            raise DatasetError(f"{self.path}: is a file, not a dataset folder (to read a JSON/JSONL/Parquet file, use `distill import {self.path}`)")
        self.shards = sorted(p for p in self.path.iterdir() if _PART.match(p.name))
        has_manifest = (self.path / MANIFEST).exists()
        if not self.shards and not has_manifest and not (self.path / PLAN).exists():
            raise DatasetError(f"{self.path}: not a dataset folder (no part-*.parquet shards and no {MANIFEST})")
        if require_complete and not has_manifest:
            raise DatasetError(f"{self.path}: dataset is incomplete (no {MANIFEST}); finish the stage that writes it first (rerun resumes it)")
        for shard in self.shards:
            try:
                got = pq.read_schema(shard)
            except Exception as e:  # pyarrow raises several types for corrupt files
                raise DatasetError(f"{shard}: unreadable Parquet shard ({e})") from None
            problems = records.schema_problems(got, schema)
            if problems:
                raise DatasetError(f"{shard}: wrong schema: {'; '.join(problems[:3])}")

    @property
    def complete(self) -> bool:
        return (self.path / MANIFEST).exists()

    def manifest(self) -> dict[str, Any] | None:
        p = self.path / MANIFEST
        return read_json(p) if p.exists() else None

    def file(self, shard: Path) -> pq.ParquetFile:
        return pq.ParquetFile(shard)

    def rejected(self) -> "Dataset | None":
        p = self.path / REJECTED_DIR
        if not p.exists() or not any(_PART.match(x.name) for x in p.iterdir()):
            return None
        return Dataset(p, schema=records.REJECTED_SCHEMA)

    def drop_counts(self) -> Counter:
        rej = self.rejected()
        counts: Counter = Counter()
        if rej is None:
            return counts
        for batch in rej.iter_batches(columns=["drop_stage", "drop_reason"]):
            for stage, reason in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
                counts[f"{stage}:{reason}"] += 1
        return counts


class DatasetWriter:
    """Writes one stage's output folder shard by shard; the manifest goes last."""

    def __init__(self, path: str | Path, stage: str, *, plan: dict[str, Any] | None = None,
                 fresh: bool = False):
        """`fresh=True` forgets earlier shards instead of resuming (for cheap single-pass stages)."""
        self.path = Path(path)
        self.stage = stage
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise explain_os_error(e, self.path) from e
        self._clean_temporaries()
        if fresh:
            self.reset()
        plan = dict(plan or {}, stage=stage)
        plan_path = self.path / PLAN
        if plan_path.exists() and not fresh:
            old = read_json(plan_path)
            diff = {k: (old.get(k), v) for k, v in plan.items() if old.get(k) != v}
            if diff:
                changes = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
                raise DatasetError(
                    f"{self.path}: was started with different settings ({changes}); "
                    "resume with the same settings, or write to a new --out / --run-id")
        else:
            atomic_write_json(plan_path, plan)
        if (self.path / MANIFEST).exists():
            # A finished folder being extended (e.g. rerun after a change in
            # limit) is no longer finished until its new manifest is written.
            (self.path / MANIFEST).unlink()

    def reset(self) -> None:
        """Forget every shard, marker and manifest: for stages that always rewrite whole."""
        for d in (self.path, self.path / REJECTED_DIR, self.path / DONE_DIR):
            if d.exists():
                for p in d.iterdir():
                    if _PART.match(p.name) or (d.name == DONE_DIR and p.suffix == ".json"):
                        p.unlink()
        (self.path / MANIFEST).unlink(missing_ok=True)

    @classmethod
    def attach(cls, path: str | Path, stage: str) -> "DatasetWriter":
        """A writer for a folder another process already opened with `DatasetWriter(...)`.

        For worker processes that write their own shards: it neither checks the
        plan nor cleans temporaries (which would race with sibling workers).
        """
        self = cls.__new__(cls)
        self.path = Path(path)
        self.stage = stage
        return self

    def _clean_temporaries(self) -> None:
        for d in (self.path, self.path / REJECTED_DIR, self.path / DONE_DIR):
            if d.exists():
                for p in d.iterdir():
                    if p.name.startswith(".") and ".tmp-" in p.name:
                        p.unlink(missing_ok=True)

    def is_done(self, index: int) -> bool:
        return (self.path / DONE_DIR / f"part-{index:05d}.json").exists()

    def done_markers(self) -> list[dict[str, Any]]:
        d = self.path / DONE_DIR
        if not d.exists():
            return []
        return [read_json(p) for p in sorted(d.glob("part-*.json"))]

    def write_shard(self, index: int, kept: pa.Table | list[dict[str, Any]],
                    rejected: pa.Table | list[dict[str, Any]] | None = None,
                    stats: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write shard `index` (kept rows, rejected rows), then its done marker."""
        kept_t = kept if isinstance(kept, pa.Table) else records.to_table(kept)
        kept_t = records.conform(kept_t)
        atomic_write_table(self.path / shard_name(index), kept_t)
        rej_path = self.path / REJECTED_DIR / shard_name(index)
        n_rej = 0
        drops: Counter = Counter()
        if rejected is not None and len(rejected):
            rej_t = rejected if isinstance(rejected, pa.Table) else records.to_table(rejected, records.REJECTED_SCHEMA)
            rej_t = records.conform(rej_t, records.REJECTED_SCHEMA)
            missing = rej_t.column("drop_reason").null_count
            if missing:
                raise ValueError(f"{self.stage}: {missing} rejected rows without a drop_reason")
            atomic_write_table(rej_path, rej_t)
            n_rej = rej_t.num_rows
            drops.update(rej_t.column("drop_reason").to_pylist())
        else:
            rej_path.unlink(missing_ok=True)  # left from an earlier, redone attempt
        marker = dict(stats or {})
        marker.update(shard=index, rows_out=kept_t.num_rows, rows_rejected=n_rej, drops=dict(drops))
        atomic_write_json(self.path / DONE_DIR / f"part-{index:05d}.json", marker)
        return marker

    def write_manifest(self, **fields: Any) -> dict[str, Any]:
        """Merge the shard markers with `fields` and write `_manifest.json` (last)."""
        manifest = merge_markers(self.stage, self.done_markers())
        manifest.update(fields)
        atomic_write_json(self.path / MANIFEST, manifest)
        return manifest


def merge_markers(stage: str, markers: list[dict[str, Any]]) -> dict[str, Any]:
    """A manifest's body from the shard done markers: rows in/out, drops by reason, summed counters."""
    from .. import __version__

    drops: Counter = Counter()
    totals: Counter = Counter()
    for m in markers:
        drops.update(m.get("drops", {}))
        for k, v in m.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "shard":
                totals[k] += v
    return {
        "stage": stage,
        "code_version": __version__,
        "created_at": records.now_utc().isoformat(),
        "shards": len(markers),
        "rows_in": int(totals.pop("rows_in", 0)),
        "rows_out": int(totals.pop("rows_out", 0)),
        "rows_rejected": int(totals.pop("rows_rejected", 0)),
        "drops": dict(sorted(drops.items())),
        "totals": dict(totals),
        "schema": [f.name for f in records.SCHEMA],
    }
