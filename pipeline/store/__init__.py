"""Dataset folders: Parquet shards, atomic writes, done-markers, rejected rows, manifests.

Layout of one dataset folder (written by one stage):

    part-00000.parquet ...      kept rows, record schema
    rejected/part-00000.parquet rows dropped by this stage, with drop_stage/reason/detail
    _done/part-00000.json       per-shard completion marker with that shard's stats
    _plan.json                  how the folder was started (shard size, input and its fingerprint), checked on resume
    _manifest.json              written last: the folder is complete when it exists
    .lock                       the writer's lock (store/lock.py): one writer per folder
    .stale/                     old contents moved aside by --overwrite (store/outdir.py), never read

Readers trust the markers and the manifest, never a listing: in a folder with
`_done/` or `_plan.json` (a DatasetWriter's), a part-*.parquet without its
done marker (a writer died between the rename and the marker) is not data. Stages read only finished inputs
(store/finished.py); writers refuse to clobber (store/outdir.py).

Every file is written to a hidden temporary name, fsynced and renamed into
place (store/atomic.py; on object stores see store/location.py), so a kill at
any moment leaves either the old state or the new one. Readers stream record
batches; nothing loads a whole dataset.

One commit protocol, safe from any process: `stage_shard` writes a shard's
kept and rejected rows under hidden temporary names (a worker may do it), and
`DatasetWriter.commit` renames them into place and then writes the done
marker, the shard's commit point (only the process that opened the writer
does it). A worker that dies, or a zombie attempt that outlives a retry, can
leave only temporaries, never a half-written or doubly-written shard.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from .. import __version__, records, truncation
from ..errors import DatasetError
from .atomic import (
    StoreWriteError,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_table,
    explain_os_error,
    fsync_dir,
    read_json,
    tmp_name,
)
from .finished import allowing_partial, fingerprint, partial_allowed, partial_note, record_partial, unfinished_message
from .location import Location, is_uri, resolve
from .lock import RunLock, folder_lock
from .outdir import check_out, clear_out, input_inside, set_aside
from .shards import ShardSpec, plan_shards, unreadable

__all__ = ["Dataset", "DatasetError", "DatasetWriter", "Location", "RunLock", "ShardSpec", "StagedShard", "StoreWriteError",
           "allowing_partial", "atomic_write_bytes", "atomic_write_json", "atomic_write_table", "check_out", "clear_out",
           "fingerprint", "folder_lock", "fsync_dir", "input_inside", "partial_allowed", "partial_note", "read_json",
           "record_partial", "require_finished", "resolve", "set_aside", "shard_name", "stage_shard", "tmp_name"]

MANIFEST = "_manifest.json"
PLAN = "_plan.json"
DONE_DIR = "_done"
REJECTED_DIR = "rejected"
PART_RE = re.compile(r"^part-(\d{5,})\.parquet$")


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def marker_name(index: int) -> str:
    return f"part-{index:05d}.json"


def marker_of(shard: str) -> str:
    """The done marker's name of a shard file's name."""
    return shard[: -len(".parquet")] + ".json"


def require_finished(target: "str | Path | Location", *, allow_partial: bool = False) -> dict[str, Any]:
    """The check every stage's input goes through: a finished dataset, or (allow_partial) its done shards.

    Returns what the output manifest records about the input: {} when it is finished, else `partial_note`.
    """
    ds = Dataset(target)
    if ds.complete:
        return {}
    if not allow_partial:
        raise DatasetError(unfinished_message(ds.path, ds.loc))
    return partial_note(ds)


def read_meta(loc: Location, shown: Any) -> Any:
    """A JSON file the store wrote (_plan.json, a done marker, the manifest); a corrupt one is one line."""
    try:
        obj = loc.read_json()
    except (ValueError, UnicodeError) as e:
        raise DatasetError(f"{shown}: corrupt ({e.__class__.__name__}: {str(e)[:80]}); delete it (a rerun redoes "
                           "what it recorded), or rerun with --overwrite") from None
    if not isinstance(obj, dict):
        raise DatasetError(f"{shown}: corrupt (not a JSON object); delete it (a rerun redoes what it recorded), "
                           "or rerun with --overwrite")
    return obj


def shown_path(target: "str | Path | Location", loc: Location) -> "Path | str":
    """A folder as its caller named it: the Path given for a local folder, else the URI."""
    if not loc.local:
        return loc.uri
    return Path(loc.path) if isinstance(target, Location) or is_uri(target) else Path(target)


class Dataset:
    """A dataset folder opened for reading, on local disk or any pyarrow filesystem. `Dataset(path)` validates it.

    `path` is what the caller gave (a Path for local folders, the URI otherwise);
    `shards` are Paths locally and Locations elsewhere.
    """

    def __init__(self, target: "str | Path | Location", *, require_complete: bool = False,
                 schema: pa.Schema = records.SCHEMA):
        self.loc = resolve(target)
        self.local = self.loc.local
        self.path = shown_path(target, self.loc)
        self.schema = schema
        if self.local:
            if not self.path.exists():
                raise DatasetError(f"{self.path}: no such dataset folder")
            if not self.path.is_dir():
                raise DatasetError(f"{self.path}: is a file, not a dataset folder (to read a JSON/JSONL/Parquet file, use `distill import {self.path}`)")
            names = {p.name for p in self.path.iterdir()}
            parts = sorted(n for n in names if PART_RE.match(n))
            self.shards = [self.path / n for n in parts]
        else:
            if not self.loc.exists():
                raise DatasetError(f"{self.path}: no such dataset folder")
            names = {i.base_name for i in self.loc.list_files()}
            parts = sorted(n for n in names if PART_RE.match(n))
            self.shards = [self.loc.join(n) for n in parts]
        if not self.shards and MANIFEST not in names and PLAN not in names:
            raise DatasetError(f"{self.path}: not a dataset folder (no part-*.parquet shards and no {MANIFEST})")
        if require_complete and MANIFEST not in names and not partial_allowed(self.loc):
            raise DatasetError(unfinished_message(self.path, self.loc))
        # A shard without its done marker is not data: its writer died before the commit point.
        self.done = self.marker_names()
        if self.done is None and PLAN in names:
            self.done = set()  # a writer's folder before its first marker (killed between rename and marker)
        self.unmarked: list[str] = []
        if self.done is not None:
            self.unmarked = [n for n in parts if marker_of(n) not in self.done]
            self.shards = [s for s, n in zip(self.shards, parts) if marker_of(n) in self.done]
        self._files: dict[str, pq.ParquetFile] = {}
        for shard in self.shards:
            try:
                got = pq.read_schema(shard) if self.local else self.file(shard).schema_arrow
            except Exception as e:  # pyarrow raises several types for corrupt files
                raise DatasetError(f"{shard}: unreadable Parquet shard ({e})") from None
            problems = records.schema_problems(got, schema)
            if problems:
                raise DatasetError(f"{shard}: wrong schema: {'; '.join(problems[:3])}")

    def marker_names(self) -> set[str] | None:
        """The done markers' names, or None for a folder without `_done/`."""
        d = self.loc.join(DONE_DIR)
        if self.local:
            p = Path(self.loc.path) / DONE_DIR
            return {q.name for q in p.iterdir()} if p.is_dir() else None
        return {i.base_name for i in d.list_files()} if d.exists() else None

    def file(self, shard: "Path | Location") -> pq.ParquetFile:
        if self.local:
            return pq.ParquetFile(shard)
        if shard.path not in self._files:
            self._files[shard.path] = shard.open_parquet()
        return self._files[shard.path]

    def num_rows(self) -> int:
        return sum(self.file(s).metadata.num_rows for s in self.shards)

    def iter_batches(self, columns: list[str] | None = None, batch_size: int = 8192) -> Iterator[pa.RecordBatch]:
        for shard in self.shards:
            pf = self.file(shard)
            names = pf.schema_arrow.names
            old = not records.LATER_COLUMNS <= set(names)  # written before a later column existed: it reads as nulls
            batches = pf.iter_batches(batch_size=batch_size,
                                      columns=records.present_columns(columns, names) if old else columns)
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                except (pa.ArrowException, OSError) as e:  # a corrupt body under an intact footer
                    raise unreadable(shard, e) from None
                yield records.fill_later(batch, columns) if old else batch

    def iter_rows(self, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
        for batch in self.iter_batches(columns=columns, batch_size=1024):
            yield from batch.to_pylist()

    def read(self, columns: list[str] | None = None) -> pa.Table:
        """Whole dataset as one table: for small datasets and tests only."""
        if not self.shards:
            return self.schema.empty_table().select(columns or self.schema.names)
        return pa.concat_tables(self.read_shard(s, columns) for s in self.shards)

    def read_shard(self, shard: "Path | Location", columns: list[str] | None = None) -> pa.Table:
        try:
            pf = self.file(shard)
            if records.LATER_COLUMNS <= set(pf.schema_arrow.names):
                return pf.read(columns=columns)
            return records.fill_later(pf.read(columns=records.present_columns(columns, pf.schema_arrow.names)),
                                      columns)
        except (pa.ArrowException, OSError) as e:
            raise unreadable(shard, e) from None

    def files(self) -> list[tuple[Location, int]]:
        """(shard location, rows) in shard order."""
        fs = self.loc.fs
        return [(Location(fs, str(Path(s).resolve()), str(s)) if self.local else s, self.file(s).metadata.num_rows)
                for s in self.shards]

    def plan(self, shard_rows: int, limit: int | None = None) -> list[ShardSpec]:
        """The shards a per-shard stage runs over: the one cut of this dataset (store/shards.py)."""
        return plan_shards(self.files(), shard_rows, limit)

    def iter_shards(self, shard_rows: int, limit: int | None = None) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        """(index, rows) in input order, by `plan`."""
        for spec in self.plan(shard_rows, limit):
            yield spec.index, spec.read_rows()

    def iter_tables(self, shard_rows: int, limit: int | None = None,
                    columns: list[str] | None = None) -> Iterator[tuple[int, pa.Table]]:
        """(index, the shard's rows as one Arrow table), by `plan`."""
        for spec in self.plan(shard_rows, limit):
            yield spec.index, spec.read(columns)

    @property
    def complete(self) -> bool:
        return self.loc.join(MANIFEST).exists()

    def manifest(self) -> dict[str, Any] | None:
        m = self.loc.join(MANIFEST)
        return read_meta(m, m.uri) if m.exists() else None

    def rejected(self) -> "Dataset | None":
        p = self.loc.join(REJECTED_DIR)
        if not any(PART_RE.match(i.base_name) for i in p.list_files()):
            return None
        rej = Dataset(self.path / REJECTED_DIR if self.local else p, schema=records.REJECTED_SCHEMA)
        if self.done is not None:  # a shard's rejected rows count only once its done marker is written
            rej.shards = [s for s in rej.shards if marker_of(Path(str(s)).name) in self.done]
        return rej

    def drop_counts(self) -> Counter:
        rej = self.rejected()
        counts: Counter = Counter()
        if rej is None:
            return counts
        for batch in rej.iter_batches(columns=["drop_stage", "drop_reason"]):
            for stage, reason in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
                counts[f"{stage}:{reason}"] += 1
        return counts


@dataclass
class StagedShard:
    """A shard's files under temporary names, as `stage_shard` left them for `DatasetWriter.commit`."""

    index: int
    kept: Location
    rejected: Location | None
    rows_out: int
    rows_rejected: int
    drops: dict[str, int] = field(default_factory=dict)


def stage_shard(folder: "str | Path | Location", index: int, kept: pa.Table | list[dict[str, Any]],
                rejected: pa.Table | list[dict[str, Any]] | None = None, *, stage: str = "") -> StagedShard:
    """Write shard `index`'s rows under hidden temporary names in `folder`; safe in any process."""
    folder = resolve(folder)
    kept_t = records.conform(kept if isinstance(kept, pa.Table) else records.to_table(kept))
    name = shard_name(index)
    kept_tmp = folder.join(name).stage_table(kept_t)
    rej_tmp, n_rej, drops = None, 0, Counter()
    if rejected is not None and len(rejected):
        rej_t = rejected if isinstance(rejected, pa.Table) else records.to_table(rejected, records.REJECTED_SCHEMA)
        rej_t = records.conform(rej_t, records.REJECTED_SCHEMA)
        missing = rej_t.column("drop_reason").null_count
        if missing:
            kept_tmp.delete()
            raise ValueError(f"{stage}: {missing} rejected rows without a drop_reason")
        rej_tmp = folder.join(REJECTED_DIR, name).stage_table(rej_t)
        n_rej = rej_t.num_rows
        drops.update(rej_t.column("drop_reason").to_pylist())
    return StagedShard(index, kept_tmp, rej_tmp, kept_t.num_rows, n_rej, dict(drops))


class DatasetWriter:
    """Writes one stage's output folder shard by shard; the manifest goes last."""

    def __init__(self, target: "str | Path | Location", stage: str, *, plan: dict[str, Any] | None = None,
                 fresh: bool = False):
        """`fresh=True` forgets earlier shards instead of resuming (for cheap single-pass stages)."""
        self.loc = resolve(target)
        self.path = shown_path(target, self.loc)
        self.stage = stage
        plan = dict(plan or {}, stage=stage)
        input_inside(plan.get("input"), self.loc)  # before anything is touched
        check_out(self.path, stage)  # and again under the lock
        try:
            self.loc.mkdirs()
        except OSError as e:
            raise explain_os_error(e, Path(self.loc.path)) from e
        # Held until the manifest is written (or this writer is dropped); reentrant within a process.
        self.lock = folder_lock(self.loc).acquire()
        check_out(self.path, stage)
        self.clean_temporaries()
        if fresh:
            self.reset()
        plan_loc = self.loc.join(PLAN)
        if plan_loc.exists() and not fresh:
            old = read_meta(plan_loc, plan_loc.uri)
            diff = {k: (old.get(k), v) for k, v in plan.items() if old.get(k) != v
                    and not (k == "input_fingerprint" and k not in old)}  # a plan from before fingerprints
            if "input_fingerprint" in diff and len(diff) == 1:
                raise DatasetError(
                    f"{self.path}: its input {plan.get('input')} changed since this folder was started; "
                    "rerun with --overwrite to redo it (the old output is kept in .stale/), or write to a new --out")
            if diff:
                changes = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items() if k != "input_fingerprint")
                raise DatasetError(
                    f"{self.path}: was started with different settings ({changes or 'its input changed'}); "
                    "resume with the same settings, or write to a new --out / --run-id, or rerun with --overwrite")
        else:
            plan_loc.write_json(plan)
        self.done_markers()  # a corrupt marker fails now, as one line, not after the work
        # A finished folder being extended (e.g. rerun after a change in
        # limit) is no longer finished until its new manifest is written.
        self.loc.join(MANIFEST).delete()

    def close(self) -> None:
        """Release the folder's lock (write_manifest does; also when the writer is dropped)."""
        lock = getattr(self, "lock", None)
        if lock is not None:
            lock.release()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # at interpreter exit the kernel releases the flock anyway
            pass

    def reset(self) -> None:
        """Forget every shard, marker and manifest: for stages that always rewrite whole. The commit
        points go first (manifest, then markers), so a kill part way never leaves a marker without its shard."""
        self.loc.join(MANIFEST).delete()
        for sub in (DONE_DIR, "", REJECTED_DIR):
            d = self.loc.join(sub) if sub else self.loc
            for i in d.list_files():
                if PART_RE.match(i.base_name) or (sub == DONE_DIR and i.base_name.endswith(".json")):
                    Location(self.loc.fs, i.path, i.path).delete()

    def clean_temporaries(self) -> None:
        """Remove what killed or zombie writers staged; call only when no worker runs."""
        self.loc.clean_temporaries(("", REJECTED_DIR, DONE_DIR))

    def is_done(self, index: int) -> bool:
        return self.loc.join(DONE_DIR, marker_name(index)).exists()

    def done_markers(self) -> list[dict[str, Any]]:
        d = self.loc.join(DONE_DIR)
        names = sorted(i.base_name for i in d.list_files()
                       if i.base_name.startswith("part-") and i.base_name.endswith(".json"))
        return [read_meta(d.join(n), d.join(n).uri) for n in names]

    def stage_shard(self, index: int, kept: pa.Table | list[dict[str, Any]],
                    rejected: pa.Table | list[dict[str, Any]] | None = None) -> StagedShard:
        return stage_shard(self.loc, index, kept, rejected, stage=self.stage)

    def commit(self, staged: StagedShard, stats: dict[str, Any] | None = None) -> dict[str, Any]:
        """Rename the staged files into place, then write the done marker (the commit point)."""
        name = shard_name(staged.index)
        staged.kept.commit_to(self.loc.join(name))
        rej_final = self.loc.join(REJECTED_DIR, name)
        if staged.rejected is not None:
            staged.rejected.commit_to(rej_final)
        else:
            rej_final.delete()  # left from an earlier, redone attempt
        marker = dict(stats or {})
        marker.update(shard=staged.index, rows_out=staged.rows_out, rows_rejected=staged.rows_rejected,
                      drops=staged.drops)
        self.loc.join(DONE_DIR, marker_name(staged.index)).write_json(marker)
        return marker

    def write_shard(self, index: int, kept: pa.Table | list[dict[str, Any]],
                    rejected: pa.Table | list[dict[str, Any]] | None = None,
                    stats: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write shard `index` (kept rows, rejected rows), then its done marker."""
        return self.commit(self.stage_shard(index, kept, rejected), stats)

    def write_manifest(self, **fields: Any) -> dict[str, Any]:
        """Merge the shard markers with `fields` and write `_manifest.json` (last)."""
        manifest = merge_markers(self.stage, self.done_markers())
        manifest.update(fields)
        self.loc.join(MANIFEST).write_json(manifest)
        self.close()
        return manifest


def merge_markers(stage: str, markers: list[dict[str, Any]]) -> dict[str, Any]:
    """A manifest's body from the shard done markers: rows in/out, drops by reason, summed counters."""

    drops: Counter = Counter()
    totals: Counter = Counter()
    for m in markers:
        drops.update(m.get("drops", {}))
        for k, v in m.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "shard":
                totals[k] += v
    cut = truncation.summary(totals)  # answering stages: the share of answers cut off by their budget
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
        **({"truncation": cut} if cut is not None else {}),
        "schema": [f.name for f in records.SCHEMA],
    }
