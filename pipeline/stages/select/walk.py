"""Deita's score-first, diversity-aware walk, with LIMA-style quotas per stratum.

Rows arrive best-first. A row is rejected when its stratum's quota is full
(`QUOTA_FULL`) or when its cosine similarity to any already-selected row is
above the threshold (`TOO_SIMILAR`); otherwise it is selected. The walk stops
when the budget is met.

Rows are decided a block at a time: each block is compared in one matrix
product with the set as it was before the block, and row by row with the
rows of its own block selected before it. That gives exactly the result of
the one-row-at-a-time walk (Deita's batch mode checks the lower triangle the
same way). The selected set is the embedding-dedup module's `SelectedSet`: exact
up to `exact_limit` members, a FAISS inverted-file index past it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...embeddings.neighbors import SelectedSet

SELECTED, TOO_SIMILAR, QUOTA_FULL = 1, 2, 3
UNLIMITED = np.iinfo(np.int64).max


@dataclass
class WalkState:
    """What carries over from one window of candidates to the next."""

    sset: SelectedSet
    quota_left: np.ndarray            # per stratum code; UNLIMITED when uncapped
    budget_left: int | None
    selected: int = 0                 # rows selected so far
    prior: int = 0                    # members the set held before the walk (an `against` dataset's rows)

    @property
    def done(self) -> bool:
        return self.budget_left is not None and self.budget_left <= 0


@dataclass
class WindowResult:
    examined: int            # candidates of this window looked at (the rest were not reached)
    decision: np.ndarray     # per examined candidate: SELECTED | TOO_SIMILAR | QUOTA_FULL
    nn_sim: np.ndarray       # per examined candidate: max cosine to rows selected before it (-inf: none)
    nn_index: np.ndarray     # insertion index (over the whole walk) of that nearest row; -1: none


def walk_window(vecs: np.ndarray, strata: np.ndarray, state: WalkState, threshold: float,
                block: int = 1024) -> WindowResult:
    """Walk the candidates `vecs` (best first, unit rows) with their stratum codes; updates `state`."""
    n = len(vecs)
    decision = np.zeros(n, dtype=np.int8)
    nn_sim = np.full(n, -np.inf, dtype=np.float32)
    nn_index = np.full(n, -1, dtype=np.int64)
    examined = 0
    for a in range(0, n, block):
        if state.done:
            break
        vb = np.ascontiguousarray(vecs[a:a + block], dtype=np.float32)
        prior_sim, prior_idx = state.sset.max_similarity(vb)
        gram = vb @ vb.T
        base = state.prior + state.selected  # insertion index of the first row this block selects
        kept: list[int] = []
        for k in range(len(vb)):
            i = a + k
            examined = i + 1
            sim, idx = float(prior_sim[k]), int(prior_idx[k])
            if kept:
                row = gram[k, kept]
                j = int(row.argmax())
                if row[j] > sim:
                    sim, idx = float(row[j]), base + j
            nn_sim[i], nn_index[i] = sim, idx
            code = strata[i]
            if state.quota_left[code] <= 0:
                decision[i] = QUOTA_FULL
            elif sim > threshold:
                decision[i] = TOO_SIMILAR
            else:
                decision[i] = SELECTED
                kept.append(k)
                state.quota_left[code] -= 1
                if state.budget_left is not None:
                    state.budget_left -= 1
                    if state.budget_left <= 0:
                        break
        if kept:
            state.sset.add(vb[kept])
            state.selected += len(kept)
    return WindowResult(examined, decision[:examined], nn_sim[:examined], nn_index[:examined])
