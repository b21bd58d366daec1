"""Dataset folders on local disk or on any pyarrow filesystem (s3://, gs://, file://, a SubTree).

What "atomic" means here:

- Local disk (a plain path or file://): exactly `store.py`'s rules. A file is
  written to a hidden temporary name, fsynced and renamed into place; a kill
  leaves the old file or the new one.
- Object stores (s3://, gs://, ...): there is no rename. An object is written
  whole under a hidden temporary key, then copied to its final key (a
  server-side copy: readers see no object or the whole object, never a prefix;
  a failed upload can at worst leave a hidden temporary key behind), and the
  temporary key is deleted. A *folder* is never atomic on an object store:
  the shard's done marker, written after its objects, is the shard's commit
  point, and `_manifest.json`, written last, is the dataset's. Readers must
  trust markers and the manifest, not listings (with `require_complete=True`,
  as every stage does for its input).

`resolve()` turns a path or URI into a `Location` (filesystem + path) that
pickles, so a Ray worker on another node opens the same place. A URI that went
through `pathlib.Path` (`s3:/bucket/x`) is repaired.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .. import records
from ..store import MANIFEST, PLAN, DatasetError, ShardReader, _PART

_URI = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]+):/+(.*)$")


def normalize(target: str | Path) -> str:
    """A URI as the user meant it, even after `Path()` collapsed its `//`."""
    s = str(target)
    m = _URI.match(s)
    if not m or len(m.group(1)) < 2:  # 'C:/x' is a Windows drive, not a scheme
        return s
    scheme, rest = m.group(1).lower(), m.group(2)
    return f"file:///{rest}" if scheme == "file" else f"{scheme}://{rest}"


def is_uri(target: str | Path) -> bool:
    return "://" in normalize(target)


@dataclass(frozen=True)
class Location:
    fs: pafs.FileSystem
    path: str          # path inside `fs`
    uri: str           # what to print and record

    @property
    def local(self) -> bool:
        """Plain local disk: os/pathlib (and store.py's fsync rules) apply."""
        return isinstance(self.fs, pafs.LocalFileSystem)

    def join(self, *parts: str) -> "Location":
        path = "/".join([self.path.rstrip("/"), *parts])
        uri = "/".join([self.uri.rstrip("/"), *parts])
        return Location(self.fs, path, uri)

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    def tmp_sibling(self) -> "Location":
        """A hidden name in the same folder, unique to this writer (store.py's pattern)."""
        parent = self.path.rstrip("/").rsplit("/", 1)[0]
        uparent = self.uri.rstrip("/").rsplit("/", 1)[0]
        name = f".{self.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        return Location(self.fs, f"{parent}/{name}", f"{uparent}/{name}")

    def __str__(self) -> str:
        return self.uri


def resolve(target: "str | Path | Location", filesystem: pafs.FileSystem | None = None) -> Location:
    """A Location for a local path, a URI, or a path inside an explicit `filesystem`."""
    if isinstance(target, Location):
        return target
    if filesystem is not None:
        return Location(filesystem, str(target), f"{type(filesystem).__name__}:{target}")
    s = normalize(target)
    if "://" in s:
        fs, path = pafs.FileSystem.from_uri(s)
        return Location(fs, path, s)
    p = str(Path(s).resolve())  # workers may run in another cwd
    return Location(pafs.LocalFileSystem(), p, p)


# -- single files ----------------------------------------------------------------

def exists(loc: Location) -> bool:
    return loc.fs.get_file_info(loc.path).type != pafs.FileType.NotFound


def mkdirs(loc: Location) -> None:
    loc.fs.create_dir(loc.path, recursive=True)


def delete(loc: Location) -> None:
    try:
        loc.fs.delete_file(loc.path)
    except FileNotFoundError:
        pass


def read_json(loc: Location) -> Any:
    with loc.fs.open_input_stream(loc.path) as f:
        return json.loads(f.read().decode("utf-8"))


def _fsync_path(path: str, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def stage_table(final: Location, table: pa.Table) -> Location:
    """Write `table` under a hidden temporary name next to `final`; `commit` moves it into place."""
    tmp = final.tmp_sibling()
    parent = final.path.rstrip("/").rsplit("/", 1)[0]
    final.fs.create_dir(parent, recursive=True)
    try:
        if final.local:
            pq.write_table(table, tmp.path, compression="zstd")
            _fsync_path(tmp.path)
        else:
            with final.fs.open_output_stream(tmp.path) as out:
                pq.write_table(table, out, compression="zstd")
    except BaseException:
        delete(tmp)
        raise
    return tmp


def commit(tmp: Location, final: Location) -> None:
    """Make a staged file visible under its final name (rename; copy + delete on object stores)."""
    if final.local:
        os.replace(tmp.path, final.path)
        _fsync_path(final.path.rsplit("/", 1)[0], directory=True)
    else:
        final.fs.move(tmp.path, final.path)


def write_bytes(final: Location, data: bytes) -> None:
    tmp = final.tmp_sibling()
    final.fs.create_dir(final.path.rstrip("/").rsplit("/", 1)[0], recursive=True)
    try:
        with final.fs.open_output_stream(tmp.path) as out:
            out.write(data)
        if final.local:
            _fsync_path(tmp.path)
    except BaseException:
        delete(tmp)
        raise
    commit(tmp, final)


def write_json(final: Location, obj: Any) -> None:
    write_bytes(final, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def write_table(final: Location, table: pa.Table) -> None:
    commit(stage_table(final, table), final)


def list_files(folder: Location) -> list[pafs.FileInfo]:
    if not exists(folder):
        return []
    return [i for i in folder.fs.get_file_info(pafs.FileSelector(folder.path)) if i.type == pafs.FileType.File]


def clean_temporaries(folder: Location, subdirs: tuple[str, ...] = ("", "rejected", "_done")) -> None:
    """Remove hidden temporaries left by killed writers (only when no writer is running)."""
    for sub in subdirs:
        d = folder.join(sub) if sub else folder
        for info in list_files(d):
            if info.base_name.startswith(".") and ".tmp-" in info.base_name:
                delete(Location(folder.fs, info.path, info.path))


# -- datasets on any filesystem ------------------------------------------------

class FsDataset(ShardReader):
    """`store.Dataset`'s reading side for a folder on any pyarrow filesystem."""

    def __init__(self, target: "str | Path | Location", *, require_complete: bool = False,
                 schema: pa.Schema = records.SCHEMA):
        self.loc = resolve(target)
        self.path = self.loc.uri
        self.schema = schema
        info = self.loc.fs.get_file_info(self.loc.path)
        if info.type == pafs.FileType.NotFound:
            raise DatasetError(f"{self.path}: no such dataset folder")
        names = {i.base_name for i in list_files(self.loc)}
        self.shards = [self.loc.join(n) for n in sorted(n for n in names if _PART.match(n))]
        if not self.shards and MANIFEST not in names and PLAN not in names:
            raise DatasetError(f"{self.path}: not a dataset folder (no part-*.parquet shards and no {MANIFEST})")
        if require_complete and MANIFEST not in names:
            raise DatasetError(f"{self.path}: dataset is incomplete (no {MANIFEST}); finish the stage that writes it first")
        self._files: dict[str, pq.ParquetFile] = {}
        for shard in self.shards:
            problems = records.schema_problems(self.file(shard).schema_arrow, schema)
            if problems:
                raise DatasetError(f"{shard}: wrong schema: {'; '.join(problems[:3])}")

    def file(self, shard: Location) -> pq.ParquetFile:
        if shard.path not in self._files:
            self._files[shard.path] = pq.ParquetFile(shard.fs.open_input_file(shard.path))
        return self._files[shard.path]

    @property
    def complete(self) -> bool:
        return exists(self.loc.join(MANIFEST))

    def manifest(self) -> dict[str, Any] | None:
        m = self.loc.join(MANIFEST)
        return read_json(m) if exists(m) else None

    def shard_rows(self) -> list[tuple[Location, int]]:
        return [(s, self.file(s).metadata.num_rows) for s in self.shards]


def open_dataset(target: "str | Path | Location", *, require_complete: bool = False):
    """`store.Dataset` for local paths (unchanged behaviour), `FsDataset` for other filesystems."""
    from ..store import Dataset

    loc = resolve(target)
    if loc.local and not isinstance(target, Location) and not is_uri(target):
        return Dataset(target, require_complete=require_complete)
    if loc.local:
        return Dataset(loc.path, require_complete=require_complete)
    return FsDataset(loc, require_complete=require_complete)


def dataset_files(ds) -> list[tuple[Location, int]]:
    """(shard location, rows) of a `store.Dataset` or `FsDataset`, in shard order."""
    if isinstance(ds, FsDataset):
        return ds.shard_rows()
    fs = pafs.LocalFileSystem()
    return [(Location(fs, str(Path(s).resolve()), str(s)), pq.ParquetFile(s).metadata.num_rows) for s in ds.shards]
