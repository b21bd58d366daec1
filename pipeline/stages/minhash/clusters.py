"""The verify and clusters phases: candidate pairs checked, union-find over the verified ones, keep decisions.

Both work on the candidate rows only (rows in at least one candidate pair):
their signatures, shingle sets (exact mode) and keep keys, gathered from the
per-block phase files. Verify writes `_work/verify-*.npy` (the pairs and their
similarities); clusters writes `_work/decisions.arrow` (one row per candidate
row, by global row number) for the filter phase, and the user-facing
`clusters.parquet` (every row of a cluster with more than one member).

Union-find over the *verified* pairs gives components; inside a component
rows are visited in keep order and (leader mode) a row is removed only when it
is a verified near-duplicate of a row already kept, so every removal names a
kept row at or above the threshold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numba import njit

from ...dedup import components, keep_rank
from ...store import atomic_write_table
from . import phases
from .blocks import Block, create_npy, load_npy, save_arrow, save_json, save_npy
from .config import MinhashConfig

U64 = np.uint64


@njit(cache=True)
def jaccard_hashed(values, a0, a1, b0, b1, keys, tags):
    """Exact Jaccard of the distinct values in values[a0:a1] and values[b0:b1] (any order, repeats allowed).

    One open-addressing table per pair instead of sorting every candidate
    row's set first: ~6x less work for the same integers |A & B| / |A | B|.
    `keys`/`tags` are scratch of at least 2 * (a1 - a0 + b1 - b0) and 16 items.
    """
    size = 16
    while size < 2 * ((a1 - a0) + (b1 - b0)):
        size *= 2
    mask = size - 1
    for s in range(size):
        tags[s] = 0
    only_a = 0
    for i in range(a0, a1):  # tag 1: in A
        v = values[i]
        s = np.int64((U64(v) * U64(0x9E3779B97F4A7C15)) >> U64(40)) & mask
        while tags[s] != 0 and keys[s] != v:
            s = (s + 1) & mask
        if tags[s] == 0:
            keys[s] = v
            tags[s] = 1
            only_a += 1
    inter = 0
    only_b = 0
    for i in range(b0, b1):  # tag 2: only in B, tag 3: in both
        v = values[i]
        s = np.int64((U64(v) * U64(0x9E3779B97F4A7C15)) >> U64(40)) & mask
        while tags[s] != 0 and keys[s] != v:
            s = (s + 1) & mask
        t = tags[s]
        if t == 0:
            keys[s] = v
            tags[s] = 2
            only_b += 1
        elif t == 1:
            tags[s] = 3
            inter += 1
    union = only_a + only_b
    return inter / union if union > 0 else 0.0


@njit(cache=True)
def similarity_scratch(indptr):
    """Scratch tables for jaccard_hashed, sized for the two largest sets."""
    big = 0
    for r in range(indptr.shape[0] - 1):
        big = max(big, indptr[r + 1] - indptr[r])
    size = 16
    while size < 4 * big:
        size *= 2
    return np.empty(size, np.uint32), np.empty(size, np.uint8)


@njit(cache=True, inline="always")
def _estimate(sigs, x, y):
    P = sigs.shape[1]
    eq = 0
    for k in range(P):
        if sigs[x, k] == sigs[y, k]:
            eq += 1
    return eq / P


@njit(cache=True)
def _similarity(sigs, indptr, values, exact, x, y, keys, tags):
    est = _estimate(sigs, x, y)
    if exact:
        return est, jaccard_hashed(values, indptr[x], indptr[x + 1], indptr[y], indptr[y + 1], keys, tags)
    return est, est


@njit(cache=True)
def verify_pairs(ia, ib, sigs, indptr, values, exact, threshold):
    """Similarity of each candidate pair (indices into the candidate rows); est, verified, keep mask."""
    n = ia.shape[0]
    est = np.empty(n, np.float64)
    ver = np.empty(n, np.float64)
    ok = np.zeros(n, np.bool_)
    keys, tags = similarity_scratch(indptr)
    for i in range(n):
        e, v = _similarity(sigs, indptr, values, exact, ia[i], ib[i], keys, tags)
        est[i] = e
        ver[i] = v
        ok[i] = v >= threshold
    return est, ver, ok


@njit(cache=True)
def decide(order, root, is_ref, sigs, indptr, values, exact, threshold, leader_mode):
    """Walk rows in (component, keep rank) order; returns leader, est, ver, comparisons.

    leader[x] == x for kept rows; otherwise the kept row x duplicates.
    Reference rows are always kept. In component mode every non-first row of a
    component is removed in favour of the component's first (best) row.
    """
    n = order.shape[0]
    leader = np.arange(n)
    est = np.ones(n, np.float64)
    ver = np.ones(n, np.float64)
    kept = np.empty(n, np.int64)
    keys, tags = similarity_scratch(indptr)
    comparisons = 0
    i = 0
    while i < n:
        j = i
        r0 = root[order[i]]
        while j < n and root[order[j]] == r0:
            j += 1
        nk = 0
        for q in range(i, j):
            x = order[q]
            if is_ref[x] or nk == 0:
                kept[nk] = x
                nk += 1
                continue
            if not leader_mode:
                e, v = _similarity(sigs, indptr, values, exact, x, kept[0], keys, tags)
                comparisons += 1
                leader[x] = kept[0]
                est[x] = e
                ver[x] = v
                continue
            best = -1
            best_v = -1.0
            best_e = 0.0
            for t in range(nk):
                e, v = _similarity(sigs, indptr, values, exact, x, kept[t], keys, tags)
                comparisons += 1
                if v >= threshold and v > best_v:
                    best, best_v, best_e = kept[t], v, e
            if best >= 0:
                leader[x] = best
                est[x] = best_e
                ver[x] = best_v
            else:
                kept[nk] = x
                nk += 1
        i = j
    return leader, est, ver, comparisons


# -- the phases ---------------------------------------------------------------------

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


def verify(work: Path, every: list[Block], cfg: MinhashConfig, fmt: dict[str, Any], pool) -> tuple:
    """Verify every candidate pair; returns the candidate rows' signatures and sets for the clusters phase."""
    pairs = load_npy(work / "pairs.npy")
    lo = (pairs >> np.uint64(32)).astype(np.int64)
    hi = (pairs & np.uint64(0xFFFFFFFF)).astype(np.int64)
    cand = np.unique(np.concatenate([lo, hi]))
    save_npy(work / "cand.npy", cand)
    create_npy(work / "csig.npy", (len(cand), cfg.num_perm), np.uint32)  # filled by the sets tasks
    tasks = []
    for b in every:
        s, e = np.searchsorted(cand, [b.start, b.start + b.rows])
        if e > s and not (work / f"set-{b.name}.done").exists():
            tasks.append({"work": str(work), "fmt": fmt, "block": b.to_dict(), "local": cand[s:e] - b.start,
                          "at": int(s), "exact": cfg.verify == "exact"})
    pool.map(phases.sets_task, tasks)
    sigs, indptr, values = gather(work, every, cand, cfg.verify == "exact", cfg.num_perm)
    pa_, pb_ = np.searchsorted(cand, lo), np.searchsorted(cand, hi)
    est, ver, ok = verify_pairs(pa_, pb_, sigs, indptr, values, cfg.verify == "exact", cfg.threshold)
    for name, arr in (("pa", pa_), ("pb", pb_), ("est", est), ("ver", ver), ("ok", ok)):
        save_npy(work / f"verify-{name}.npy", arr)
    save_json(work / "verify.done", {"candidate_rows": int(len(cand)), "pairs": int(len(pairs)),
                                     "verified_pairs": int(ok.sum())})
    return sigs, indptr, values


_KEYS = pa.schema({"row": pa.int64(), "id": pa.string(), "score": pa.float64(), "out_len": pa.int64(),
                   "tie": pa.uint64(), "ref": pa.bool_(), "source": pa.string()})


def _keys(work: Path, every: list[Block], cand: np.ndarray) -> pa.Table:
    """The keep keys of the candidate rows (`_KEYS`), from the signature tasks' info and tie files."""
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
    return pa.concat_tables(parts).combine_chunks() if parts else _KEYS.empty_table()


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
    rank = keep_rank(keys, cfg.keep_by, first=[("ref", "descending")], then=[("tie", "ascending"), ("row", "ascending")])
    root = components(n, pa_[ok], pb_[ok], rank)
    order = np.lexsort((rank, root))
    is_ref = keys.column("ref").to_numpy(zero_copy_only=False)
    leader, est, ver, comparisons = decide(order, root, is_ref, sigs, indptr, values, exact,
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
    save_arrow(work / "decisions.arrow", dec)  # a temporary renamed: a full disk leaves no torn file holding space
    table = dec.filter(pc.greater(dec.column("component_size"), 1)).drop_columns(["dropped", "duplicate_of_source"])
    atomic_write_table(Path(work).parent / "clusters.parquet", table)
    save_json(work / "clusters.done", {
        "clusters": int(len(np.unique(root[size > 1]))) if n else 0,
        "largest_cluster": int(size.max()) if n else 0,
        "removed": int(dropped.sum()), "removed_against": int((is_ref[leader] & dropped).sum()) if n else 0,
        "keep_comparisons": int(comparisons)})
