"""Blocks (the unit of every phase and of restart), their reading, and the phase files.

The input is cut, in order, into blocks of `shard_rows` rows; block k always
holds the same rows, so its phase files and its output shard k can be redone
alone. Rows are numbered globally (block start + position): new rows first,
then the rows of `--against` datasets, which come in as extra blocks whose
signatures are read from their store instead of computed.

Phase files live in `<out>/_work/`. They are written to a temporary name and
renamed (a kill leaves the old state or the new one, and a temporary that
store.clean_temporaries removes at the next start) but not fsynced: they are
scratch that a rerun recomputes, and fsyncing gigabytes of it would cost more
than the phases. Each phase writes its done marker after its files.
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ... import records
from ...store import Dataset, explain_os_error, tmp_name


@dataclass
class Block:
    index: int                                  # output shard index (new rows) or position among ref blocks
    start: int                                  # global number of the block's first row
    rows: int
    segments: list[tuple[str, int, int]]        # (parquet path, first row, end row) in that file
    ref: bool = False                           # a row of an --against dataset (never removed)
    sig_path: str | None = None                 # stored signatures of a ref block

    @property
    def name(self) -> str:
        return f"{'ref' if self.ref else 'blk'}-{self.index:05d}"

    def columns(self) -> list[str]:
        return pq.read_schema(self.segments[0][0]).names if self.segments else []

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Block":
        d = dict(d)
        d["segments"] = [tuple(s) for s in d["segments"]]
        return cls(**d)


def plan_blocks(ds: Dataset, block_rows: int, limit: int | None = None) -> list[Block]:
    """Cut the dataset's rows, in order, into blocks of about `block_rows`.

    Blocks end at Parquet row-group boundaries where they can (a row group is
    decoded whole, so a block that ended inside one would make two blocks
    decode it); a row group larger than twice `block_rows` is sliced anyway, to
    bound a block's memory. Block k is the same rows on every run of the same input.
    """
    units: list[tuple[str, int, int]] = []  # (file, lo, hi): row groups, or slices of huge ones
    for shard in ds.shards:
        md = pq.ParquetFile(shard).metadata
        pos = 0
        for g in range(md.num_row_groups):
            n = md.row_group(g).num_rows
            step = block_rows if n > 2 * block_rows else n
            for lo in range(0, n, max(step, 1)):
                units.append((str(shard), pos + lo, pos + min(n, lo + step)))
            pos += n
    remaining = float("inf") if limit is None else limit
    blocks: list[Block] = []
    segs: list[tuple[str, int, int]] = []
    rows = start = 0
    for path, lo, hi in units:
        hi = min(hi, lo + remaining) if remaining != float("inf") else hi
        if hi <= lo:
            break
        remaining -= hi - lo
        if segs and segs[-1][0] == path and segs[-1][2] == lo:
            segs[-1] = (path, segs[-1][1], hi)  # contiguous in one file: one segment
        else:
            segs.append((path, lo, hi))
        rows += hi - lo
        if rows >= block_rows:
            blocks.append(Block(len(blocks), start, rows, segs))
            start, rows, segs = start + rows, 0, []
    if rows:
        blocks.append(Block(len(blocks), start, rows, segs))
    return blocks


def read_segment(pf: pq.ParquetFile, lo: int, hi: int, columns: list[str] | None) -> pa.Table:
    """Rows [lo, hi) of one Parquet file, reading only the row groups that overlap."""
    md = pf.metadata
    groups, first = [], None
    pos = 0
    for g in range(md.num_row_groups):
        n = md.row_group(g).num_rows
        if pos + n > lo and pos < hi:
            groups.append(g)
            if first is None:
                first = pos
        pos += n
    if not groups:
        return pf.schema_arrow.empty_table().select(columns) if columns else pf.schema_arrow.empty_table()
    # No Arrow threads: blocks already run in parallel processes, and on 2 cores
    # the extra threads only contend (a 100k-row read took 2.3x longer with them).
    t = pf.read_row_groups(groups, columns=columns, use_threads=False)
    return t.slice(lo - first, hi - lo)


def _read_record_segment(pf: pq.ParquetFile, lo: int, hi: int, columns: list[str] | None) -> pa.Table:
    """A segment of a record shard; a column added to the schema after the shard was written reads as nulls."""
    names = pf.schema_arrow.names
    if records.LATER_COLUMNS <= set(names):
        return read_segment(pf, lo, hi, columns)
    return records.fill_later(read_segment(pf, lo, hi, records.present_columns(columns, names)), columns)


def read_block(block: Block, columns: list[str] | None = None) -> pa.Table:
    parts = [_read_record_segment(pq.ParquetFile(p), lo, hi, columns) for p, lo, hi in block.segments]
    if len(parts) == 1:
        return parts[0]
    return pa.concat_tables(parts).combine_chunks()


# -- phase files ---------------------------------------------------------------

def _write(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """`write(f)` fills a temporary that is renamed to `path` (no fsync: see the module docstring). On a
    failed write (a full disk) the temporary goes at once, not at the next start: it holds the space a
    rerun needs."""
    tmp = tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if not e.errno:  # numpy reports a short write ("N requested and M written") without an errno
            e = OSError(errno.ENOSPC, f"short write ({e})")
        raise explain_os_error(e, path) from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_npy(path: Path, arr: np.ndarray) -> None:
    _write(path, lambda f: np.save(f, np.ascontiguousarray(arr), allow_pickle=False))


def save_table(path: Path, table: pa.Table) -> None:
    _write(path, lambda f: pq.write_table(table, f, compression="zstd"))


def save_arrow(path: Path, table: pa.Table) -> None:
    """An Arrow IPC file (read whole, without decoding, by the filter phase)."""
    def write(f: BinaryIO) -> None:
        with pa.ipc.new_file(f, table.schema) as w:
            w.write_table(table)
    _write(path, write)


def save_json(path: Path, obj: Any) -> None:
    _write(path, lambda f: f.write(json.dumps(obj, sort_keys=True, default=str).encode()))


def load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


def _npy_header(f: BinaryIO) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of the open .npy file `f`, left at its first data byte."""
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(f)
    return shape, dtype


def read_npy_into(path: Path, alloc: Callable[[tuple[int, ...], np.dtype], np.ndarray]) -> np.ndarray:
    """A phase file read into `alloc(shape, dtype)`, a reusable buffer: np.load or a memory map would
    touch fresh pages, which cost more here than the read."""
    with open(path, "rb") as f:
        shape, dtype = _npy_header(f)
        arr = alloc(shape, dtype)
        if arr.size and f.readinto(arr.reshape(-1).view(np.uint8)) != arr.nbytes:
            raise OSError(f"{path}: truncated phase file")
    return arr


def create_npy(path: Path, shape: tuple[int, ...], dtype) -> None:
    """An .npy file of `shape`, its data left to write_npy_rows (sparse until then); kept if it exists."""
    def write(f: BinaryIO) -> None:
        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                 "fortran_order": False, "shape": tuple(shape)})
        f.truncate(f.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize)
    if not path.exists():
        _write(path, write)


def write_npy_rows(path: Path, first: int, rows: np.ndarray) -> None:
    """Write `rows` in place as rows first, first + 1, ... of the create_npy file `path`.

    Workers fill disjoint row ranges of one file, which the caller then maps
    whole: no per-block files to copy together, no fresh memory for the result.
    """
    rows = np.ascontiguousarray(rows)
    with open(path, "r+b") as f:
        shape, dtype = _npy_header(f)
        if rows.dtype != dtype or rows.shape[1:] != tuple(shape[1:]) or first + len(rows) > shape[0]:
            raise ValueError(f"{path}: rows {rows.shape} {rows.dtype} at {first} do not fit {shape} {dtype}")
        data = memoryview(rows.reshape(-1).view(np.uint8))
        pos = f.tell() + first * (rows[0].nbytes if len(rows) else 0)
        try:
            while len(data):
                n = os.pwrite(f.fileno(), data, pos)
                data, pos = data[n:], pos + n
        except OSError as e:
            raise explain_os_error(e, path) from e
