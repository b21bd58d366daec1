"""Diversity helpers: similarity of rows to an already-selected set (Deita's score-first selection).

Vectors are L2-normalised float32 rows (as `Embedder.encode` returns), so the
inner product is the cosine similarity.

- `max_similarity_to_set(queries, selected)`: for each query, the cosine of and
  index of its nearest selected vector (exact, in blocks).
- `SelectedSet`: a growing set answering the same question incrementally; exact
  up to `exact_limit` vectors, then a FAISS inverted-file index (approximate,
  still fast at millions of selected rows).
- `greedy_diverse_select(vectors, order, threshold, budget)`: walk rows in
  `order` (best score first) and keep one unless its similarity to a kept row
  exceeds `threshold`; decided a block at a time, with exactly the result of
  the one-row-at-a-time walk.
"""

from __future__ import annotations

import math
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
    """A growing set of unit vectors: `add`, then `max_similarity(queries)` -> (cosine, insertion index)
    of the nearest member.

    Exact (one blocked matrix product against every member) up to
    `exact_limit` members; past that the members move into a FAISS inverted-
    file index (IndexIVFFlat, inner product) trained on the members so far.
    Why IVF and not a graph: on this 2-core machine adding 200k vectors to an
    HNSW graph took 72 s and 20k searches 15 s; the IVF index added them in
    0.9 s and answered in 1.2 s (nprobe 8). Selecting 1M rows needs ~1M adds
    and ~1.3M searches.

    The approximation only ever misses a neighbour (a probe that skips the
    cell holding it): similarities it reports are exact, so a selection walk
    can let a near-duplicate in, never throw a good row out.
    `scripts/bench_select.py` measures how often.
    """

    def __init__(self, dim: int, exact_limit: int = 50_000, expected: int | None = None, nprobe: int = 16,
                 seed: int = 0):
        self.dim = dim
        self.exact_limit = exact_limit
        self.expected = expected
        self.nprobe = nprobe
        self.seed = seed
        self._buf = np.zeros((min(1024, max(exact_limit, 1)), dim), dtype=np.float32)
        self._n = 0
        self._index = None
        self.nlist = 0

    def __len__(self) -> int:
        return self._n

    @property
    def approximate(self) -> bool:
        return self._index is not None

    def add(self, vectors: np.ndarray) -> None:
        v = _as_rows(vectors)
        if v.shape[1] != self.dim:
            raise ValueError(f"vectors have {v.shape[1]} dims, the set has {self.dim}")
        if self._index is not None:
            self._index.add(v)
            self._n += len(v)
            return
        need = self._n + len(v)
        if need > len(self._buf):
            grown = np.zeros((max(need, 2 * len(self._buf)), self.dim), dtype=np.float32)
            grown[: self._n] = self._buf[: self._n]
            self._buf = grown
        self._buf[self._n:need] = v
        self._n = need
        if self._n > self.exact_limit:
            self._build_index()

    def _build_index(self) -> None:
        import faiss
        members = self._buf[: self._n]
        # ~sqrt(final size) cells, at least 39 members per cell to train on (FAISS's own floor).
        target = max(self.expected or 0, self._n)
        self.nlist = int(min(max(64, 2 ** round(math.log2(max(1.0, math.sqrt(target))))), self._n // 39))
        quantizer = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFFlat(quantizer, self.dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = self.seed  # training is reproducible
        index.train(members)
        index.add(members)
        index.nprobe = min(self.nprobe, self.nlist)
        self._index = index
        self._buf = np.zeros((0, self.dim), dtype=np.float32)  # the index holds the vectors now

    def max_similarity(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cosine to the nearest member, its insertion index) per query; (-inf, -1) when empty."""
        q = _as_rows(queries)
        if self._index is None:
            return max_similarity_to_set(q, self._buf[: self._n])
        d, i = self._index.search(q, 1)
        sims = np.where(i[:, 0] >= 0, d[:, 0], -np.inf).astype(np.float32)
        return sims, i[:, 0].astype(np.int64)


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
    sset = selected if selected is not None else SelectedSet(vecs.shape[1], exact_limit=200_000)
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
