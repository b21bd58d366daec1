"""Candidate pairs: bands x rows chosen from an explicit recall target, and pairs from runs of equal band keys.

A pair at Jaccard s becomes a candidate with probability 1 - (1 - s^r)^b.
Among all (b, r) with b * r <= num_perm whose probability at the threshold is
at least the recall target, we pick the one with the least sum of the
false-positive area (candidates below the threshold: wasted verification) and
the false-negative area (pairs above it that are missed), both integrated over
s. datasketch minimises the same sum but without the recall floor, which is
how its 0.9 default ends up catching a pair at the threshold ~31% of the time.

Candidate pairs come from runs of equal band keys after a sort (no Python
dict per row). A run of m rows gives 2(m - 1) pairs, not m(m - 1)/2: each
member is paired with the run's first member and with the next one, members
ordered by a content hash of their signature (`sig_tie`), so the pairs do not
depend on where the rows sit in the input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

U64 = np.uint64
CURVE_POINTS = (0.5, 0.6, 0.7, 0.8, 0.9)


def candidate_probability(s: float | np.ndarray, bands: int, rows: int) -> float | np.ndarray:
    return 1.0 - (1.0 - np.asarray(s, dtype=float) ** rows) ** bands


def _areas(threshold: float, bands: int, rows: int, steps: int = 400) -> tuple[float, float]:
    lo = np.linspace(0.0, threshold, steps)
    hi = np.linspace(threshold, 1.0, steps)
    fp = np.trapezoid(candidate_probability(lo, bands, rows), lo)
    fn = np.trapezoid(1.0 - candidate_probability(hi, bands, rows), hi)
    return float(fp), float(fn)


@dataclass(frozen=True)
class Banding:
    bands: int
    rows: int
    threshold: float
    recall_target: float
    chosen: str  # "target" or "explicit"

    @property
    def recall_at_threshold(self) -> float:
        return float(candidate_probability(self.threshold, self.bands, self.rows))

    def curve(self) -> dict[str, float]:
        return {f"{s:.1f}": round(float(candidate_probability(s, self.bands, self.rows)), 4) for s in CURVE_POINTS}

    def describe(self) -> str:
        pts = ", ".join(f"P({k})={v:.3f}" for k, v in self.curve().items())
        return (f"{self.bands} bands x {self.rows} rows ({self.chosen}); candidate probability {pts}; "
                f"recall at threshold {self.threshold}: {self.recall_at_threshold:.3f} (target {self.recall_target})")

    def to_dict(self) -> dict:
        fp, fn = _areas(self.threshold, self.bands, self.rows)
        return {"bands": self.bands, "rows_per_band": self.rows, "chosen": self.chosen,
                "threshold": self.threshold, "recall_target": self.recall_target,
                "recall_at_threshold": round(self.recall_at_threshold, 4), "s_curve": self.curve(),
                "false_positive_area": round(fp, 4), "false_negative_area": round(fn, 4)}


def choose_banding(threshold: float, num_perm: int, recall_target: float,
                   bands: int | None = None, rows: int | None = None) -> Banding:
    if bands is not None and rows is not None:
        return Banding(bands, rows, threshold, recall_target, "explicit")
    best: tuple[float, int, int] | None = None
    for r in range(1, num_perm + 1):
        for b in range(1, num_perm // r + 1):
            if candidate_probability(threshold, b, r) < recall_target:
                continue
            fp, fn = _areas(threshold, b, r)
            key = (round(fp + fn, 9), b, r)  # ties: fewer bands (less sorting)
            if best is None or key < best:
                best = key
    if best is None:  # only when the target is unreachable with num_perm permutations
        raise ValueError(f"no banding of {num_perm} permutations reaches recall {recall_target} at threshold {threshold}; "
                         "raise num_perm or lower recall_at_threshold")
    return Banding(best[1], best[2], threshold, recall_target, "target")


# -- pairs from band keys ----------------------------------------------------------

@njit(cache=True)
def run_pairs(keys, order, gidx, tie, first_ref):
    """Pairs (packed lo << 32 | hi) from runs of equal keys[order]; skips ref-ref pairs."""
    n = order.shape[0]
    # Gather the sorted keys first: independent loads overlap, where the run
    # scan's dependent random reads did not (2.5x faster on a 1M-row band).
    sk = np.empty(n, np.uint64)
    for i in range(n):
        sk[i] = keys[order[i]]
    in_runs = 0
    longest = 1
    run = 1
    for i in range(1, n):
        if sk[i] == sk[i - 1]:
            in_runs += 1
            run += 1
            longest = max(longest, run)
        else:
            run = 1
    out = np.empty(2 * in_runs, np.uint64)  # a run of m rows gives at most 2(m - 1) pairs
    members = np.empty(longest, np.int64)
    ties = np.empty(longest, np.uint64)
    npairs = 0
    i = 0
    while i < n:
        j = i + 1
        k0 = sk[i]
        while j < n and sk[j] == k0:
            j += 1
        m = j - i
        if m == 2:  # most runs: the one pair, without sorting
            lo = min(gidx[order[i]], gidx[order[i + 1]])
            hi = max(gidx[order[i]], gidx[order[i + 1]])
            if lo != hi and not (lo >= first_ref and hi >= first_ref):
                out[npairs] = (U64(lo) << U64(32)) | U64(hi)
                npairs += 1
        elif m > 2:
            for q in range(m):
                members[q] = gidx[order[i + q]]
                ties[q] = tie[order[i + q]]
            # content order: tie hash, then global number only for identical signatures
            srt = np.argsort(ties[:m], kind="mergesort")
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
