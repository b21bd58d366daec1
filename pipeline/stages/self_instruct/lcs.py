"""Compiled kernels for exact ROUGE-L: bit-parallel LCS of one text against many pool items.

Reads and writes numpy arrays only. The pool is one flat int32 array of token
ids with offsets; a candidate's match masks live in a table indexed by token
id, so scanning a pool item is one table lookup and a few word operations per
token (Hyyro 2004, "Bit-parallel LCS-length computation revisited"). The
F-measure is computed with the same float64 operations, in the same order, as
the `rouge-score` package, so the numbers are bit-identical to it.
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, inline="always")
def _popcount(x):
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


@nb.njit(cache=True)
def _fscore(la, lb, lcs):
    if la == 0 or lb == 0:
        return 0.0
    p = lcs / lb
    r = lcs / la
    if p + r > 0:
        return 2 * p * r / (p + r)
    return 0.0


@nb.njit(cache=True)
def scores_short(cand, members, flat, off, mask, out):
    """Exact F of `cand` (<= 64 tokens) against pool items `members`; `mask` is zero on entry and exit."""
    la = cand.shape[0]
    one = np.uint64(1)
    for i in range(la):
        mask[cand[i]] |= one << np.uint64(i)
    full = ~np.uint64(0) if la == 64 else (one << np.uint64(la)) - one
    for k in range(members.shape[0]):
        m_i = members[k]
        s = off[m_i]
        e = off[m_i + 1]
        v = full
        for j in range(s, e):
            m = mask[flat[j]]
            if m:
                # Hyyro's bit-vector LCS step: V' = (V + (V & M)) | (V & ~M)
                v = ((v + (v & m)) | (v & ~m)) & full
        lcs = la - np.int64(_popcount(v))
        out[k] = _fscore(la, e - s, lcs)
    for i in range(la):
        mask[cand[i]] = np.uint64(0)


@nb.njit(cache=True)
def scores_long(cand, members, flat, off, slot, out):
    """Same as `scores_short` for candidates over 64 tokens (multi-word bit vectors with carries)."""
    la = cand.shape[0]
    nw = (la + 63) // 64
    one = np.uint64(1)
    ndist = 0
    for i in range(la):
        if slot[cand[i]] < 0:
            slot[cand[i]] = ndist
            ndist += 1
    masks = np.zeros((ndist, nw), dtype=np.uint64)
    for i in range(la):
        masks[slot[cand[i]], i // 64] |= one << np.uint64(i % 64)
    rem = la - (nw - 1) * 64
    top = ~np.uint64(0) if rem == 64 else (one << np.uint64(rem)) - one
    v = np.empty(nw, dtype=np.uint64)
    for k in range(members.shape[0]):
        m_i = members[k]
        s = off[m_i]
        e = off[m_i + 1]
        for w in range(nw):
            v[w] = ~np.uint64(0)
        v[nw - 1] = top
        for j in range(s, e):
            sl = slot[flat[j]]
            if sl < 0:
                continue
            carry = np.uint64(0)
            for w in range(nw):
                m = masks[sl, w]
                x = v[w]
                u = x & m
                t = x + u
                c1 = np.uint64(1) if t < x else np.uint64(0)
                t2 = t + carry
                c2 = np.uint64(1) if t2 < t else np.uint64(0)
                carry = c1 | c2
                v[w] = t2 | (x & ~m)
            v[nw - 1] &= top
        zeros = 0
        for w in range(nw):
            zeros += np.int64(_popcount(v[w]))
        out[k] = _fscore(la, e - s, la - zeros)
    for i in range(la):
        slot[cand[i]] = -1
