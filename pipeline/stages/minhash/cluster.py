"""Compiled kernels for the global phases: band runs to pairs, verification, union-find, keep decisions.

Candidate pairs come from runs of equal band keys after a sort (no Python
dict per row). A run of m rows gives 2(m - 1) pairs, not m(m - 1)/2: each
member is paired with the run's first member and with the next one, members
ordered by a content hash of their signature, so the pairs do not depend on
where the rows sit in the input. Union-find over the *verified* pairs gives
components; inside a component rows are visited in keep order and (leader
mode) a row is removed only when it is a verified near-duplicate of a row
already kept, so every removal names a kept row at or above the threshold.
"""

from __future__ import annotations

import numpy as np
from numba import njit

U64 = np.uint64


@njit(cache=True)
def run_pairs(keys, order, gidx, tie, first_ref):
    """Pairs (packed lo << 32 | hi) from runs of equal keys[order]; skips ref-ref pairs."""
    n = order.shape[0]
    out = np.empty(2 * n, np.uint64)
    npairs = 0
    i = 0
    while i < n:
        j = i + 1
        k0 = keys[order[i]]
        while j < n and keys[order[j]] == k0:
            j += 1
        m = j - i
        if m > 1:
            members = np.empty(m, np.int64)
            ties = np.empty(m, np.uint64)
            for q in range(m):
                members[q] = gidx[order[i + q]]
                ties[q] = tie[order[i + q]]
            # content order: tie hash, then global number only for identical signatures
            srt = np.argsort(ties, kind="mergesort")
            first = members[srt[0]]
            prev = first
            for q in range(1, m):
                cur = members[srt[q]]
                for t in range(2):
                    other = first if t == 0 else prev
                    if t == 1 and prev == first:
                        break
                    lo = min(cur, other)
                    hi = max(cur, other)
                    if lo != hi and not (lo >= first_ref and hi >= first_ref):
                        out[npairs] = (U64(lo) << U64(32)) | U64(hi)
                        npairs += 1
                prev = cur
        i = j
    return out[:npairs]


@njit(cache=True)
def jaccard_sorted(values, a0, a1, b0, b1):
    inter = 0
    i, j = a0, b0
    while i < a1 and j < b1:
        x, y = values[i], values[j]
        if x == y:
            inter += 1
            i += 1
            j += 1
        elif x < y:
            i += 1
        else:
            j += 1
    union = (a1 - a0) + (b1 - b0) - inter
    return inter / union if union > 0 else 0.0


@njit(cache=True, inline="always")
def _estimate(sigs, x, y):
    P = sigs.shape[1]
    eq = 0
    for k in range(P):
        if sigs[x, k] == sigs[y, k]:
            eq += 1
    return eq / P


@njit(cache=True)
def _similarity(sigs, indptr, values, exact, x, y):
    est = _estimate(sigs, x, y)
    if exact:
        return est, jaccard_sorted(values, indptr[x], indptr[x + 1], indptr[y], indptr[y + 1])
    return est, est


@njit(cache=True)
def verify_pairs(pa, pb, sigs, indptr, values, exact, threshold):
    """Similarity of each candidate pair (indices into the candidate rows); est, verified, keep mask."""
    n = pa.shape[0]
    est = np.empty(n, np.float64)
    ver = np.empty(n, np.float64)
    ok = np.zeros(n, np.bool_)
    for i in range(n):
        e, v = _similarity(sigs, indptr, values, exact, pa[i], pb[i])
        est[i] = e
        ver[i] = v
        ok[i] = v >= threshold
    return est, ver, ok


@njit(cache=True)
def _find(parent, x):
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:  # path compression
        nxt = parent[x]
        parent[x] = root
        x = nxt
    return root


@njit(cache=True)
def components(n, pa, pb, rank):
    """Union-find over pairs; every component is rooted at its best-ranked member."""
    parent = np.arange(n)
    for i in range(pa.shape[0]):
        ra = _find(parent, pa[i])
        rb = _find(parent, pb[i])
        if ra != rb:
            if rank[ra] < rank[rb]:
                parent[rb] = ra
            else:
                parent[ra] = rb
    for x in range(n):
        parent[x] = _find(parent, x)
    return parent


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
                e, v = _similarity(sigs, indptr, values, exact, x, kept[0])
                comparisons += 1
                leader[x] = kept[0]
                est[x] = e
                ver[x] = v
                continue
            best = -1
            best_v = -1.0
            best_e = 0.0
            for t in range(nk):
                e, v = _similarity(sigs, indptr, values, exact, x, kept[t])
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


@njit(cache=True)
def sig_tie(sigs):
    """A 64-bit content hash of each full signature: the order-free tie-break."""
    n, P = sigs.shape
    out = np.empty(n, np.uint64)
    for r in range(n):
        h = U64(0x9E3779B97F4A7C15)
        for k in range(P):
            h = (h ^ U64(sigs[r, k])) * U64(0xFF51AFD7ED558CCD)
            h ^= h >> U64(29)
        out[r] = h
    return out
