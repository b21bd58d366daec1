"""The clusters phase: keep order, union-find over verified pairs, keep decisions, cluster table.

Works on the candidate rows only (rows in at least one candidate pair): their
signatures, shingle sets (exact mode) and keep keys are gathered from the
per-block phase files. Writes `_work/decisions.arrow` (one row per candidate
row, by global row number) for the filter phase, and the user-facing
`clusters.parquet` (every row of a cluster with more than one member).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.store import atomic_write_table

from . import cluster
from .blocks import Block, load_npy, save_json
from .config import MinhashConfig

_SORT = {"score": ("score", "descending", "at_end"), "length": ("out_len", "descending", "at_end"),
         "id": ("id", "ascending", "at_end")}


def gather(work: Path, every: list[Block], cand: np.ndarray, need_sets: bool, num_perm: int | None = None):
    """Signatures (mapped, not copied) and (need_sets) shingle-hash CSR of the candidate rows, in `cand` order,
    from the sets tasks' files."""
    sigs = load_npy(work / "csig.npy", mmap=True) if len(cand) else np.zeros((0, num_perm or 1), np.uint32)
    spans = [(b, *map(int, np.searchsorted(cand, [b.start, b.start + b.rows]))) for b in every]
    spans = [(b, s, e) for b, s, e in spans if e > s]
    # one array sized up front: joining per-block parts was a second full copy at the memory peak
    total = sum(len(load_npy(work / f"csetv-{b.name}.npy", mmap=True)) for b, _, _ in spans) if need_sets else 0
    indptr = np.zeros(len(cand) + 1, np.int64)
    values = np.empty(max(total, 1), np.uint32)
    offset = 0
    for b, s, e in spans:
        if need_sets:
            ptr, vals = load_npy(work / f"csetp-{b.name}.npy"), load_npy(work / f"csetv-{b.name}.npy", mmap=True)
            indptr[s + 1:e + 1] = ptr[1:] + offset
            values[offset:offset + len(vals)] = vals
            offset += len(vals)
    return sigs, indptr, values


def _keys(work: Path, every: list[Block], cand: np.ndarray) -> pa.Table:
    parts = []
    for b in every:
        s, e = np.searchsorted(cand, [b.start, b.start + b.rows])
        if e == s:
            continue
        local = cand[s:e] - b.start
        info = pq.read_table(work / f"info-{b.name}.parquet").take(pa.array(local))
        score = info.column("score")
        score = pc.if_else(pc.is_nan(score), pa.scalar(None, pa.float64()), score)
        parts.append(pa.table({
            "row": pa.array(cand[s:e]), "id": info.column("id").cast(pa.string()), "score": score,
            "out_len": info.column("out_len"), "tie": pa.array(load_npy(work / f"tie-{b.name}.npy", mmap=True)[local]),
            "ref": pa.array(np.full(e - s, b.ref)),
            "source": pa.array([b.segments[0][0] if b.ref else None] * (e - s), pa.string())}))
    if not parts:
        return pa.table({"row": pa.array([], pa.int64()), "id": pa.array([], pa.string()),
                         "score": pa.array([], pa.float64()), "out_len": pa.array([], pa.int64()),
                         "tie": pa.array([], pa.uint64()), "ref": pa.array([], pa.bool_()),
                         "source": pa.array([], pa.string())})
    return pa.concat_tables(parts).combine_chunks()


def decide_clusters(work: Path, every: list[Block], cfg: MinhashConfig, gathered=None) -> None:
    """Keep decisions for the candidate rows; `gathered` reuses the verify phase's arrays."""
    exact = cfg.verify == "exact"
    cand = load_npy(work / "cand.npy")
    pa_, pb_, ok = (load_npy(work / f"verify-{n}.npy") for n in ("pa", "pb", "ok"))
    sigs, indptr, values = gathered or gather(work, every, cand, exact, cfg.num_perm)
    keys = _keys(work, every, cand)
    n = keys.num_rows
    # Keep order: reference rows first (published rows are never removed), then
    # keep_by, then content (signature hash), then global row number, which
    # only separates rows identical in all of these.
    sort_keys = ([("ref", "descending", "at_end")] + [_SORT[k] for k in cfg.keep_by]
                 + [("tie", "ascending", "at_end"), ("row", "ascending", "at_end")])
    rank = np.empty(n, np.int64)
    rank[pc.sort_indices(keys, sort_keys=sort_keys).to_numpy()] = np.arange(n)
    root = cluster.components(n, pa_[ok], pb_[ok], rank)
    order = np.lexsort((rank, root))
    is_ref = keys.column("ref").to_numpy(zero_copy_only=False)
    leader, est, ver, comparisons = cluster.decide(order, root, is_ref, sigs, indptr, values, exact,
                                                   cfg.threshold, cfg.cluster == "leader")
    dropped = leader != np.arange(n)
    size = np.bincount(root, minlength=n)[root] if n else np.zeros(0, np.int64)
    ids = keys.column("id")
    take = lambda arr, idx: arr.take(pa.array(idx))  # noqa: E731
    null_unless = lambda arr: pc.if_else(pa.array(dropped), arr, pa.scalar(None, arr.type))  # noqa: E731
    dec = pa.table({
        "row": keys.column("row"), "id": ids, "ref": keys.column("ref"), "kept": pa.array(~dropped),
        "dropped": pa.array(dropped), "cluster": take(ids, leader),
        "duplicate_of": null_unless(take(ids, leader)),
        "estimated": null_unless(pa.array(est.astype(np.float64))),
        "verified": null_unless(pa.array(ver.astype(np.float64))),
        "duplicate_of_ref": pa.array(is_ref[leader] & dropped),
        "duplicate_of_source": null_unless(take(keys.column("source"), leader)),
        "component": take(ids, root), "component_size": pa.array(size.astype(np.int64)),
        "source": keys.column("source")})
    with pa.ipc.new_file(str(work / "decisions.arrow"), dec.schema) as w:
        w.write_table(dec)
    table = dec.filter(pc.greater(dec.column("component_size"), 1)).drop_columns(["dropped", "duplicate_of_source"])
    atomic_write_table(Path(work).parent / "clusters.parquet", table)
    save_json(work / "clusters.done", {
        "clusters": int(len(np.unique(root[size > 1]))) if n else 0,
        "largest_cluster": int(size.max()) if n else 0,
        "removed": int(dropped.sum()), "removed_against": int((is_ref[leader] & dropped).sum()) if n else 0,
        "keep_comparisons": int(comparisons)})
