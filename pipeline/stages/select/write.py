"""Phase 3 of selection: write selected and rejected rows, input chunk by input chunk.

Arrow-level filtering (no per-row Python for rows that are simply carried
over); per-row work only for what is row-specific: the selected rows'
`meta["select"]` and the too_similar rows' detail (cosine and the id of the
selected row they repeat).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from ... import records
from ...runner import Progress
from ...store import Dataset, DatasetWriter
from .config import SelectConfig
from .scan import REASONS, Scan
from .walk import SELECTED, TOO_SIMILAR

STAGE = "select"


def _merge_meta(meta: str | None, value: dict[str, Any]) -> str:
    row = {"meta": meta}
    records.set_meta(row, STAGE, value)
    return row["meta"]


def _details(scan: Scan, pos: np.ndarray, cfg: SelectConfig) -> list[str]:
    out = []
    for p, code in zip(pos.tolist(), scan.decision[pos].tolist()):
        if code == TOO_SIMILAR:
            nn = scan.nn_pos[p]
            if nn >= 0:
                out.append(f"cosine {scan.nn_sim[p]:.4f} > {cfg.threshold:.6g} to selected row {scan.ids[nn].decode()}")
            else:
                out.append(f"cosine {scan.nn_sim[p]:.4f} > {cfg.threshold:.6g} to published row "
                           f"{scan.against_ids[-2 - nn].decode()} in {cfg.against}")
        elif code == 3:
            out.append(f"{cfg.quota_by} '{scan.strata_names[scan.strata[p]]}' quota full")
        elif code == 0:
            out.append(f"budget of {cfg.budget} met before this row")
        elif code == 4:
            out.append("no combined score (judge failed or unparseable; see meta.score)")
        elif code == 5:
            out.append(f"score {scan.score[p]:.4g} < {cfg.min_score}")
        else:
            out.append(f"below the configured {'quality' if code == 6 else 'accuracy'} floor")
    return out


def write_phase(ds: Dataset, writer: DatasetWriter, scan: Scan, cfg: SelectConfig, shard_rows: int,
                progress: bool = True) -> int:
    """Write every chunk not done yet; returns how many were skipped as done."""
    bar = Progress(len(scan.ids), STAGE, progress)
    skipped = 0
    meta_idx = records.SCHEMA.get_field_index("meta")
    try:
        for k, table in ds.iter_tables(shard_rows):
            if writer.is_done(k):
                skipped += 1
                bar.update(table.num_rows)
                continue
            pos = np.arange(k * shard_rows, k * shard_rows + table.num_rows)
            sel = scan.decision[pos] == SELECTED
            kept = table.filter(pa.array(sel))
            kpos = pos[sel]
            metas = [_merge_meta(m, {"rank": int(scan.rank[p]), "nn_sim": None if not np.isfinite(scan.nn_sim[p])
                                     else round(float(scan.nn_sim[p]), 4)})
                     for m, p in zip(kept.column("meta").to_pylist(), kpos.tolist())]
            kept = kept.set_column(kept.schema.get_field_index("meta"), records.SCHEMA.field(meta_idx),
                                   pa.array(metas, pa.string()))
            rej = table.filter(pa.array(~sel))
            rpos = pos[~sel]
            codes = scan.decision[rpos]
            rej = rej.append_column("drop_stage", pa.array([STAGE] * len(rpos), pa.string()))
            rej = rej.append_column("drop_reason", pa.array([REASONS[c] for c in codes.tolist()], pa.string()))
            rej = rej.append_column("drop_detail", pa.array(_details(scan, rpos, cfg), pa.string()))
            writer.write_shard(k, kept, rej, {"rows_in": table.num_rows})
            bar.update(table.num_rows)
    finally:
        bar.close()
    return skipped

