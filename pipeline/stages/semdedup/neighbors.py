"""Diversity helpers: similarity of rows to an already-selected set (Deita's score-first selection).

Vectors are L2-normalised float32 rows (as `Embedder.encode` returns), so the
inner product is the cosine similarity.

- `max_similarity_to_set(queries, selected)`: for each query, the cosine of and
  index of its nearest selected vector (exact, in blocks).
- `SelectedSet`: a growing set answering the same question incrementally; exact
  up to `exact_limit` vectors, then a FAISS HNSW graph (approximate, still fast
  at millions of selected rows).
- `greedy_diverse_select(vectors, order, threshold, budget)`: walk rows in
  `order` (best score first) and keep one unless its similarity to a kept row
  exceeds `threshold`; decided a block at a time, with exactly the result of
  the one-row-at-a-time walk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

_BLOCK = 2048


def _as_rows(x: np.ndarray | Sequence) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    return np.ascontiguousarray(x)


def max_similarity_to_set(queries: np.ndarray, selected: np.ndarray,
                          block: int = _BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """(cosine to the nearest selected row, its index) for each query; (-inf, -1) when the set is empty."""
    q = _as_rows(queries)
    s = _as_rows(selected) if len(selected) else np.zeros((0, q.shape[1]), np.float32)
    sims = np.full(len(q), -np.inf, dtype=np.float32)
    idx = np.full(len(q), -1, dtype=np.int64)
    if not len(s) or not len(q):
        return sims, idx
    for a in range(0, len(q), block):
        qb = q[a:a + block]
        best = np.full(len(qb), -np.inf, dtype=np.float32)
        arg = np.full(len(qb), -1, dtype=np.int64)
        for b in range(0, len(s), block * 4):  # bounded memory: block x 4*block floats at a time
            m = qb @ s[b:b + block * 4].T
            j = m.argmax(axis=1)
            v = m[np.arange(len(qb)), j]
            better = v > best
            best[better] = v[better]
            arg[better] = j[better] + b
        sims[a:a + block] = best
        idx[a:a + block] = arg
    return sims, idx


class SelectedSet:
    """An incrementally growing set of unit vectors: `add`, then `max_similarity(queries)`.

    Exact (a matrix product against every member) while the set holds at most
    `exact_limit` vectors; past that the members move into a FAISS HNSW index
    (inner product), whose nearest-neighbour answers are approximate but cost
    about log(size) per query. Indices returned are insertion positions.
    """

    def __init__(self, dim: int, exact_limit: int = 200_000, hnsw_m: int = 32, ef_search: int = 128):
        self.dim = dim
        self.exact_limit = exact_limit
        self.hnsw_m = hnsw_m
        self.ef_search = ef_search
        self._buf = np.zeros((1024, dim), dtype=np.float32)
        self._n = 0
        self._index = None  # faiss index once past exact_limit

    def __len__(self) -> int:
        return self._n

    @property
    def approximate(self) -> bool:
        return self._index is not None

    @property
    def vectors(self) -> np.ndarray:
        """The members in insertion order (exact mode keeps them all)."""
        return self._buf[: self._n]

    def add(self, vectors: np.ndarray) -> None:
        v = _as_rows(vectors)
        if v.shape[1] != self.dim:
            raise ValueError(f"vectors have {v.shape[1]} dims, the set has {self.dim}")
        need = self._n + len(v)
        if need > len(self._buf):
            grown = np.zeros((max(need, 2 * len(self._buf)), self.dim), dtype=np.float32)
            grown[: self._n] = self._buf[: self._n]
            self._buf = grown
        self._buf[self._n:need] = v
        self._n = need
        if self._index is not None:
            self._index.add(v)
        elif self._n > self.exact_limit:
            self._build_index()

    def _build_index(self) -> None:
        import faiss
        index = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = self.ef_search
        index.add(self._buf[: self._n])
        self._index = index

    def max_similarity(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cosine to the nearest member, its insertion index) per query; (-inf, -1) when empty."""
        q = _as_rows(queries)
        if self._index is None:
            return max_similarity_to_set(q, self._buf[: self._n])
        d, i = self._index.search(q, 1)
        return d[:, 0].astype(np.float32), i[:, 0].astype(np.int64)


@dataclass
class Selection:
    selected: np.ndarray      # positions into `vectors`, in the order they were selected
    examined: int             # how many rows of `order` were looked at before the budget filled
    nearest_sim: np.ndarray   # per examined row: its similarity to the nearest row selected before it


def greedy_diverse_select(vectors: np.ndarray, order: Sequence[int] | np.ndarray, threshold: float = 0.9,
                          budget: int | None = None, selected: SelectedSet | None = None,
                          block: int = 1024) -> Selection:
    """Deita's score-first walk: take rows in `order`; keep one unless cosine > `threshold` to a kept row.

    `selected` may hold rows chosen earlier (e.g. a published release); it is
    extended in place. Stops once `budget` rows were selected in this call.
    Deciding a block at a time gives exactly the row-at-a-time result: a row is
    compared with the set as it was before the block and with the rows of its
    own block kept before it.
    """
    vecs = _as_rows(vectors)
    order = np.asarray(order, dtype=np.int64)
    sset = selected if selected is not None else SelectedSet(vecs.shape[1])
    chosen: list[int] = []
    nearest = np.full(len(order), -np.inf, dtype=np.float32)
    examined = 0
    for a in range(0, len(order), block):
        if budget is not None and len(chosen) >= budget:
            break
        ids = order[a:a + block]
        vb = vecs[ids]
        prior, _ = sset.max_similarity(vb)
        gram = vb @ vb.T
        kept_local: list[int] = []
        for k in range(len(ids)):
            examined = a + k + 1
            sim = float(prior[k])
            if kept_local:
                sim = max(sim, float(gram[k, kept_local].max()))
            nearest[a + k] = sim
            if sim <= threshold:
                kept_local.append(k)
                chosen.append(int(ids[k]))
                if budget is not None and len(chosen) >= budget:
                    break
        if kept_local:
            sset.add(vb[kept_local])
    return Selection(np.asarray(chosen, dtype=np.int64), examined, nearest[:examined])
