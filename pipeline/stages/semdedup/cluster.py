"""Pairs to clusters (union-find) and to one kept row per cluster, by the MinHash keep policy.

Keep policy: highest `score` (missing scores rank last), then longest output,
then smallest id, then a hash of the output (two rows with one id but different
answers). The decision depends only on the set of rows and their values,
never on the order they were read in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .search import Pairs, exact_sims


def components(n: int, pairs: Pairs) -> np.ndarray:
    """Connected-component root of each of n rows (a root is the smallest index of its component).

    Union-find done a whole edge list at a time (millions of pairs at 1M rows
    would be seconds of Python per pass otherwise): every round hooks, for
    each edge whose ends have different roots, the larger root under the
    smaller, then halves paths until every row points at its root. Parents
    never exceed their row, so a root is its component's smallest index and
    the result does not depend on the order of the pairs.
    """
    parent = np.arange(n, dtype=np.int64)
    if not len(pairs):
        return parent
    i, j = pairs.i.astype(np.int64), pairs.j.astype(np.int64)
    while True:
        ri, rj = parent[i], parent[j]
        differ = ri != rj
        if not differ.any():
            return parent
        ri, rj = ri[differ], rj[differ]
        lo = np.minimum(ri, rj)
        np.minimum.at(parent, np.maximum(ri, rj), lo)
        while True:  # pointer jumping: flat again
            up = parent[parent]
            if np.array_equal(up, parent):
                break
            parent = up


def keep_rank(ids: np.ndarray, scores: np.ndarray, out_lens: np.ndarray, out_hash: np.ndarray) -> np.ndarray:
    """Rank of every row under the keep policy (0 = most wanted)."""
    score = np.where(np.isnan(scores), -np.inf, scores)
    _, id_rank = np.unique(ids, return_inverse=True)
    order = np.lexsort((out_hash, id_rank.reshape(-1), -out_lens, -score))
    rank = np.empty(len(ids), np.int64)
    rank[order] = np.arange(len(ids))
    return rank


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
    root = components(n, pairs)
    best = np.full(n, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(best, root, rank)
    by_rank = np.empty(n, np.int64)
    by_rank[rank] = np.arange(n)
    kept = by_rank[best[root]]
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
