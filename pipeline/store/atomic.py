"""Atomic file writes: a hidden temporary name, fsync, rename, fsync of the folder.

Every file the pipeline writes goes through here, so a kill at any moment
leaves the old file or the new one, never a torn one, and a leftover
temporary is recognisable by its name (`.NAME.tmp-PID-RANDOM`) and removed by
`clean_temporaries`. An OSError becomes a `StoreWriteError` whose one line
names the path and the fix (disk full, no permission).
"""

from __future__ import annotations

import errno
import io
import json
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import StoreWriteError

TMP_MARK = ".tmp-"


def tmp_name(final: Path) -> Path:
    return final.with_name(f".{final.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def is_temporary(path: Path) -> bool:
    return path.name.startswith(".") and TMP_MARK in path.name


def clean_temporaries(folder: Path, recursive: bool = False) -> None:
    """Remove temporaries a killed writer left behind (never a finished file)."""
    if not folder.is_dir():
        return
    for p in (folder.rglob(".*") if recursive else folder.glob(".*")):
        if p.is_file() and is_temporary(p):
            p.unlink(missing_ok=True)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def explain_os_error(e: OSError, path: Path) -> StoreWriteError:
    if e.errno == errno.ENOSPC:
        msg = f"{path}: disk full while writing; nothing partial was kept. Free space and rerun: done shards are kept."
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        msg = f"{path}: cannot write here ({e.strerror}); choose another --out or --workdir."
    else:
        msg = f"{path}: write failed: {e.strerror or e}"
    return StoreWriteError(e.errno or 0, msg)


def atomic_write_with(path: Path, write) -> None:
    """`write(tmp_path)` fills a temporary; it is fsynced and renamed to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise explain_os_error(e, path) from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write_with(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def atomic_write_table(path: Path, table: pa.Table) -> None:
    atomic_write_with(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def atomic_write_npy(path: Path, array: np.ndarray) -> None:
    atomic_write_bytes(path, npy_bytes(np.asarray(array)))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))
