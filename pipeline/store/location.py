"""Where a dataset folder lives: a local path or any pyarrow filesystem (s3://, gs://, file://).

What "atomic" means:
- Local disk (a plain path or file://): a file is written to a hidden
  temporary name, fsynced and renamed into place (`store.atomic`); a kill
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from . import atomic

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
        """Plain local disk: os/pathlib and the fsync rules of store.atomic apply."""
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def parent(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[0]

    def join(self, *parts: str) -> "Location":
        return Location(self.fs, "/".join([self.path.rstrip("/"), *parts]), "/".join([self.uri.rstrip("/"), *parts]))

    def tmp_sibling(self) -> "Location":
        """A hidden name in the same folder, unique to this writer."""
        name = atomic.tmp_name(Path(self.name)).name
        return Location(self.fs, f"{self.parent}/{name}", f"{self.uri.rstrip('/').rsplit('/', 1)[0]}/{name}")

    def __str__(self) -> str:
        return self.uri

    # -- single files --------------------------------------------------------
    def exists(self) -> bool:
        return self.fs.get_file_info(self.path).type != pafs.FileType.NotFound

    def mkdirs(self) -> None:
        self.fs.create_dir(self.path, recursive=True)

    def delete(self) -> None:
        try:
            self.fs.delete_file(self.path)
        except FileNotFoundError:
            pass

    def read_json(self) -> Any:
        with self.fs.open_input_stream(self.path) as f:
            return json.loads(f.read().decode("utf-8"))

    def open_parquet(self) -> pq.ParquetFile:
        return pq.ParquetFile(self.path if self.local else self.fs.open_input_file(self.path))

    def list_files(self) -> list[pafs.FileInfo]:
        if not self.exists():
            return []
        return [i for i in self.fs.get_file_info(pafs.FileSelector(self.path)) if i.type == pafs.FileType.File]

    def stage_table(self, table: pa.Table) -> "Location":
        """Write `table` under a hidden temporary name next to this file; `commit_to` moves it into place."""
        tmp = self.tmp_sibling()
        self.fs.create_dir(self.parent, recursive=True)
        try:
            if self.local:
                pq.write_table(table, tmp.path, compression="zstd")
                with open(tmp.path, "rb+") as f:
                    os.fsync(f.fileno())
            else:
                with self.fs.open_output_stream(tmp.path) as out:
                    pq.write_table(table, out, compression="zstd")
        except OSError as e:
            tmp.delete()
            raise atomic.explain_os_error(e, Path(self.path)) from e
        except BaseException:
            tmp.delete()
            raise
        return tmp

    def commit_to(self, final: "Location") -> None:
        """Make this staged file visible under `final` (rename; copy + delete on object stores)."""
        if final.local:
            os.replace(self.path, final.path)
            atomic.fsync_dir(Path(final.parent))
        else:
            final.fs.move(self.path, final.path)

    def write_json(self, obj: Any) -> None:
        if self.local:
            atomic.atomic_write_json(Path(self.path), obj)
            return
        data = (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()
        tmp = self.tmp_sibling()
        self.fs.create_dir(self.parent, recursive=True)
        try:
            with self.fs.open_output_stream(tmp.path) as out:
                out.write(data)
        except BaseException:
            tmp.delete()
            raise
        tmp.commit_to(self)

    def clean_temporaries(self, subdirs: tuple[str, ...] = ("",)) -> None:
        """Remove hidden temporaries left by killed writers (only when no writer is running)."""
        for sub in subdirs:
            d = self.join(sub) if sub else self
            for info in d.list_files():
                if atomic.is_temporary(Path(info.base_name)):
                    Location(self.fs, info.path, info.path).delete()


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
