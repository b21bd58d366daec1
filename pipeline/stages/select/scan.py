"""Phase 1 of selection: one pass over the few columns the walk needs, into numpy arrays.

Per pool row: the id (fixed-width bytes), the combined score, a stratum code,
and the decision so far (score floors and unscored rows are decided here,
before any embedding). The walk order is score descending, then id
ascending, so ties never depend on input order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ...store import Dataset
from ..hard.strata import stratum
from .config import SelectConfig

NOT_REACHED, UNSCORED, BELOW_MIN_SCORE, BELOW_MIN_QUALITY, BELOW_MIN_ACCURACY = 0, 4, 5, 6, 7
# Decision code -> drop_reason (1 = selected is not a drop).
REASONS = {0: "budget_reached", 2: "too_similar", 3: "quota_full", 4: "unscored", 5: "below_min_score",
           6: "below_min_quality", 7: "below_min_accuracy"}


@dataclass
class Scan:
    ids: np.ndarray                 # S-bytes, one per pool row
    score: np.ndarray               # float64, NaN when null
    strata: np.ndarray              # int32 code into strata_names
    strata_names: list[str]
    decision: np.ndarray            # int8 decision code per row
    order: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # candidates, best first
    nn_sim: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    nn_pos: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    rank: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    against_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, "S24"))  # nn_pos -2-k: against row k

    @property
    def n_candidates(self) -> int:
        return len(self.order)


def ids_to_numpy(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """String ids as a fixed-width bytes array; zero-copy when every id has the same length."""
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    out = []
    for ch in chunks:
        if ch.null_count:
            raise ValueError("rows without an id")
        if isinstance(ch, pa.LargeStringArray):
            ch = ch.cast(pa.string())
        offsets = np.frombuffer(ch.buffers()[1], dtype=np.int32)[ch.offset: ch.offset + len(ch) + 1]
        lengths = np.diff(offsets)
        if len(ch) and (lengths == lengths[0]).all() and lengths[0] > 0:
            w = int(lengths[0])
            data = np.frombuffer(ch.buffers()[2], dtype=np.uint8)[offsets[0]: offsets[-1]]
            out.append(data.view(f"S{w}").copy())
        else:
            out.append(np.array([s.encode() for s in ch.to_pylist()], dtype="S"))
    if not out:
        return np.zeros(0, dtype="S24")
    width = max(a.dtype.itemsize for a in out)
    return np.concatenate([a.astype(f"S{width}") for a in out])


def _floats(col) -> np.ndarray:
    return pc.fill_null(col.cast(pa.float64()), np.nan).to_numpy()


def scan(ds: Dataset, cfg: SelectConfig) -> Scan:
    by = "meta" if cfg.quota_by == "hard" else cfg.quota_by  # the hard stratum is meta.hard's flag
    cols = ["id", "score", "quality", "accuracy"] + ([by] if by else [])
    ids, score, quality, accuracy, strata = [], [], [], [], []
    names: dict[str, int] = {}
    for batch in ds.iter_batches(columns=cols, batch_size=262_144):
        ids.append(ids_to_numpy(batch.column("id")))
        score.append(_floats(batch.column("score")))
        quality.append(_floats(batch.column("quality")))
        accuracy.append(_floats(batch.column("accuracy")))
        if cfg.quota_by:
            col = batch.column(by) if by != "meta" else pa.array([stratum(m) for m in batch.column("meta").to_pylist()])
            enc = pc.fill_null(col, "none").dictionary_encode()
            local = np.array([names.setdefault(v, len(names)) for v in enc.dictionary.to_pylist()] or [0], np.int32)
            strata.append(local[enc.indices.to_numpy()])
        else:
            strata.append(np.zeros(batch.num_rows, np.int32))
    n = sum(len(a) for a in ids)
    if n == 0:
        return Scan(np.zeros(0, "S24"), np.zeros(0), np.zeros(0, np.int32), [], np.zeros(0, np.int8))
    width = max(a.dtype.itemsize for a in ids)
    s = Scan(ids=np.concatenate([a.astype(f"S{width}") for a in ids]), score=np.concatenate(score),
             strata=np.concatenate(strata), strata_names=list(names) if cfg.quota_by else ["all"],
             decision=np.full(n, NOT_REACHED, np.int8))
    q, acc = np.concatenate(quality), np.concatenate(accuracy)
    # Floors on the judge scores: a value below the floor fails it; a missing
    # value cannot be shown to meet it, so that row is unscored (dropped).
    for floor, values, code in ((cfg.min_accuracy, acc, BELOW_MIN_ACCURACY), (cfg.min_quality, q, BELOW_MIN_QUALITY)):
        if floor is not None:
            open_ = s.decision == NOT_REACHED
            s.decision[open_ & (values < floor)] = code
            s.decision[open_ & np.isnan(values)] = UNSCORED
    if cfg.min_score is not None:
        s.decision[(s.decision == NOT_REACHED) & (s.score < cfg.min_score)] = BELOW_MIN_SCORE
    # A null combined score follows the `unscored` policy: dropped, or walked last.
    unscored = np.isnan(s.score) & (s.decision == NOT_REACHED)
    cand = np.flatnonzero((s.decision == NOT_REACHED) & ~unscored)
    ordered = cand[np.lexsort((s.ids[cand], -s.score[cand]))]
    if cfg.unscored == "last":
        rest = np.flatnonzero(unscored)
        ordered = np.concatenate([ordered, rest[np.argsort(s.ids[rest], kind="stable")]])
    else:
        s.decision[unscored] = UNSCORED
    s.order = ordered.astype(np.int64)
    s.nn_sim = np.full(n, np.nan, np.float32)
    s.nn_pos = np.full(n, -1, np.int64)
    s.rank = np.full(n, -1, np.int64)
    return s
