"""Shard plans a worker can read by itself: (file, row range) pieces, not rows.

`plan_shards` cuts the input exactly as `runner.iter_shards` does (shard k is
rows [k*shard_rows, (k+1)*shard_rows) in input order, `limit` counted from the
start), but from Parquet metadata only, so the driver never reads the rows
and ships nothing bigger than file names to the workers. `read_rows` gives a
worker the very same row dicts `iter_shards` would have given (tests hold the
two equal).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .storage import Location


@dataclass(frozen=True)
class Piece:
    file: Location
    start: int   # first row in the file
    stop: int    # one past the last row


@dataclass(frozen=True)
class ShardSpec:
    index: int
    rows: int
    pieces: tuple[Piece, ...]


def plan_shards(files: list[tuple[Location, int]], shard_rows: int, limit: int | None = None) -> list[ShardSpec]:
    total = sum(n for _, n in files)
    if limit is not None:
        total = min(total, limit)
    specs: list[ShardSpec] = []
    fi, fpos, start = 0, 0, 0
    while start < total:
        want = min(shard_rows, total - start)
        pieces: list[Piece] = []
        got = 0
        while got < want:
            loc, n = files[fi]
            take = min(n - fpos, want - got)
            if take > 0:
                pieces.append(Piece(loc, fpos, fpos + take))
                got += take
                fpos += take
            if fpos >= n:
                fi, fpos = fi + 1, 0
        specs.append(ShardSpec(len(specs), want, tuple(pieces)))
        start += want
    return specs


def _read_piece(piece: Piece, columns: list[str] | None) -> pa.Table:
    loc = piece.file
    pf = pq.ParquetFile(loc.path if loc.local else loc.fs.open_input_file(loc.path))
    md = pf.metadata
    groups, first, pos = [], 0, 0
    for g in range(md.num_row_groups):
        n = md.row_group(g).num_rows
        if pos + n > piece.start and pos < piece.stop:
            if not groups:
                first = pos
            groups.append(g)
        pos += n
    if not groups:
        schema = pf.schema_arrow
        return schema.empty_table().select(columns) if columns else schema.empty_table()
    return pf.read_row_groups(groups, columns=columns).slice(piece.start - first, piece.stop - piece.start)


def read_table(spec: ShardSpec, columns: list[str] | None = None) -> list[pa.Table]:
    """The shard as one table per piece (pieces may differ in physical schema)."""
    return [_read_piece(p, columns) for p in spec.pieces]


def read_rows(spec: ShardSpec) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for t in read_table(spec):
        rows.extend(t.to_pylist())
    return rows
