"""Choose bands x rows from an explicit recall target, and describe the S-curve.

A pair at Jaccard s becomes a candidate with probability 1 - (1 - s^r)^b.
Among all (b, r) with b * r <= num_perm whose probability at the threshold is
at least the recall target, we pick the one with the least sum of the
false-positive area (candidates below the threshold: wasted verification) and
the false-negative area (pairs above it that are missed), both integrated over
s. datasketch minimises the same sum but without the recall floor, which is
how its 0.9 default ends up catching a pair at the threshold ~31% of the time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
