"""Pairs to clusters and to one kept row per cluster, by the keep policy both dedup stages share (pipeline.dedup).

Ties after the policy's keys are broken by a hash of the output (two rows
with one id but different answers). Reads and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ... import dedup
from .search import Pairs, exact_sims


def keep_rank(ids: np.ndarray, scores: np.ndarray, out_lens: np.ndarray, out_hash: np.ndarray) -> np.ndarray:
    """Rank of every row under the keep policy (0 = most wanted); a NaN score ties with -inf, below every other."""
    keys = pa.table({"score": np.where(np.isnan(scores), -np.inf, scores), "out_len": out_lens, "id": ids,
                     "out_hash": out_hash})
    return dedup.keep_rank(keys, then=[("out_hash", "ascending")])


@dataclass
class Decisions:
    kept_pos: np.ndarray   # per row: position of the row kept for its cluster (itself when kept)
    sim_to_kept: np.ndarray  # per row: cosine to that kept row (1.0 for kept rows)
    via_pos: np.ndarray    # per row: its most similar neighbour in a pair (-1 when in none)
    via_sim: np.ndarray    # per row: that neighbour's cosine (nan when in none)
    cluster_size: np.ndarray

    @property
    def dropped(self) -> np.ndarray:
        return self.kept_pos != np.arange(len(self.kept_pos))


def decide(x: np.ndarray, pairs: Pairs, rank: np.ndarray) -> Decisions:
    """One kept row per connected component of `pairs`; detail for every dropped row."""
    n = len(rank)
    root = kept = dedup.components(n, pairs.i, pairs.j, rank)  # a component's root is its best-ranked row
    sim = np.ones(n)
    dropped = np.nonzero(kept != np.arange(n))[0]
    if len(dropped):
        sim[dropped] = exact_sims(x[dropped], x[kept[dropped]])
    via = np.full(n, -1, np.int64)
    via_sim = np.full(n, np.nan)
    if len(pairs):
        ends = np.concatenate([pairs.i, pairs.j])
        other = np.concatenate([pairs.j, pairs.i])
        s = np.concatenate([pairs.sim, pairs.sim])
        order = np.lexsort((other, -s, ends))  # per row: strongest edge first, ties by partner
        first = np.unique(ends[order], return_index=True)[1]
        via[ends[order][first]] = other[order][first]
        via_sim[ends[order][first]] = s[order][first]
    size = np.bincount(root, minlength=n)[root]
    return Decisions(kept, sim, via, via_sim, size)
