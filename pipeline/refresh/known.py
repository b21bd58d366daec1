"""The refresh's exact-id step: drop new rows whose id the published pool already holds, or that repeat.

Ids are content hashes of (instruction, input) (records.make_id), so a row
with a published id is the same task again, whatever its answer. MinHash
(instruction + input + output) and the embedding dedup catch most of these
too, but neither guarantees it for every setting; this step makes "no id
twice in a release" hold by construction. It runs before MinHash, so the
costlier steps never see these rows. Drop reasons: `id_already_published`
(detail names the version) and `duplicate_id` (the first row with that id
tonight is kept: nothing is scored yet, so there is no better rule).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .. import records
from ..store import Dataset, DatasetWriter

STAGE = "known_ids"


def published_ids(pool: Path | None) -> pa.Array:
    if pool is None:
        return pa.array([], pa.string())
    return Dataset(pool).read(columns=["id"]).column("id").combine_chunks()


def drop_known_ids(input: str | Path, out: str | Path, pool: Path | None, *, version: str | None,
                   run_id: str, shard_rows: int = 1000) -> dict[str, Any]:
    """Write `input`'s rows whose id is new (not in `pool`, not seen earlier tonight) to `out`."""
    ds = Dataset(input, require_complete=True)
    known = published_ids(pool)
    writer = DatasetWriter(out, STAGE, plan={"input": str(ds.path), "against": str(pool) if pool else None},
                           fresh=True)  # cheap: always rewritten whole
    seen: set[str] = set()
    for k, batch in enumerate(ds.iter_batches(batch_size=shard_rows)):
        ids = batch.column("id")
        published = pc.is_in(ids, value_set=known).to_pylist() if len(known) else [False] * len(ids)
        keep, rejected = [], []
        for i, (rid, old) in enumerate(zip(ids.to_pylist(), published)):
            if old:
                rejected.append((i, "id_already_published", f"id {rid} is in the published version {version}"))
            elif rid in seen:
                rejected.append((i, "duplicate_id", f"id {rid} was already generated earlier tonight"))
            else:
                seen.add(rid)
                keep.append(i)
        table = pa.Table.from_batches([batch])
        rows = table.take(pa.array([i for i, _, _ in rejected], pa.int64())).to_pylist() if rejected else []
        dropped = [records.rejected_row(r, STAGE, reason, detail) for r, (_, reason, detail) in zip(rows, rejected)]
        writer.write_shard(k, table.take(pa.array(keep, pa.int64())), dropped, {"rows_in": batch.num_rows})
    return writer.write_manifest(run_id=run_id, input=str(ds.path), against=str(pool) if pool else None,
                                 against_version=version, against_rows=len(known))
