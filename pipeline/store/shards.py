"""Cutting a dataset into shards: (file, row range) pieces that any process can read by itself.

Shard k is rows [k*shard_rows, (k+1)*shard_rows) in input order, `limit`
counted from the start, on every executor and every run: this is the one
place rows are cut, and a plan is built from Parquet metadata only, so a
driver never reads the rows and ships nothing bigger than file names to its
workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from .. import records
from ..errors import DatasetError
from .location import Location


def unreadable(shard: object, e: BaseException) -> DatasetError:
    """A shard whose pages cannot be read (a corrupt body under an intact footer): one line naming it."""
    why = str(e).strip().splitlines()[0][:120] if str(e).strip() else e.__class__.__name__
    return DatasetError(f"{shard}: unreadable Parquet shard ({why}); restore it, or delete it with its "
                        "_done/ marker and rerun the stage that wrote it")


@dataclass(frozen=True)
class Piece:
    file: Location
    start: int   # first row in the file
    stop: int    # one past the last row

    def read(self, columns: list[str] | None = None) -> pa.Table:
        try:
            return self.read_pages(columns)
        except (pa.ArrowException, OSError) as e:
            raise unreadable(self.file, e) from None

    def read_pages(self, columns: list[str] | None = None) -> pa.Table:
        pf = self.file.open_parquet()
        if pf.schema_arrow.names and not set(records.LATER_COLUMNS) <= set(pf.schema_arrow.names):
            read = records.present_columns(columns, pf.schema_arrow.names)
            return records.fill_later(self.read_groups(pf, read), columns)
        return self.read_groups(pf, columns)

    def read_groups(self, pf, columns: list[str] | None) -> pa.Table:
        md = pf.metadata
        groups, first, pos = [], 0, 0
        for g in range(md.num_row_groups):
            n = md.row_group(g).num_rows
            if pos + n > self.start and pos < self.stop:
                if not groups:
                    first = pos
                groups.append(g)
            pos += n
        if not groups:
            schema = pf.schema_arrow
            return schema.empty_table().select(columns) if columns else schema.empty_table()
        return pf.read_row_groups(groups, columns=columns).slice(self.start - first, self.stop - self.start)


@dataclass(frozen=True)
class ShardSpec:
    index: int
    rows: int
    pieces: tuple[Piece, ...]

    def tables(self, columns: list[str] | None = None) -> list[pa.Table]:
        """The shard as one table per piece (pieces may differ in physical schema)."""
        return [p.read(columns) for p in self.pieces]

    def read(self, columns: list[str] | None = None) -> pa.Table:
        return pa.concat_tables(self.tables(columns))

    def read_rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for t in self.tables():
            rows.extend(t.to_pylist())
        return rows


def plan_shards(files: list[tuple[Location, int]], shard_rows: int, limit: int | None = None) -> list[ShardSpec]:
    """`files` is (shard file, rows) in dataset order."""
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
