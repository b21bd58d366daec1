"""The growing set of selected vectors the walk compares each candidate with.

Exact (one matrix product against every member, via the embedding-dedup
module's `max_similarity_to_set`) up to `exact_limit` members; past that the
members move into a FAISS inverted-file index (IndexIVFFlat, inner product)
trained on the members so far. Why IVF and not a graph: on this 2-core
machine adding 200k vectors to an HNSW graph took 72 s and 20k searches
15 s; the IVF index added them in 0.9 s and answered in 1.2 s (nprobe 8).
Selecting 1M rows needs ~1M adds and ~1.3M searches.

The approximation only ever misses a neighbour (a probe that skips the cell
holding it): similarities it reports are exact, so it can let a near-duplicate
in, never throw a good row out. `scripts/bench_select.py` measures how often.
"""

from __future__ import annotations

import math

import numpy as np

from ..semdedup.neighbors import max_similarity_to_set


class GrowingSet:
    """`add(vectors)`; `max_similarity(queries) -> (cosine, insertion index)` of the nearest member."""

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
        v = np.ascontiguousarray(vectors, dtype=np.float32)
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
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if self._index is None:
            return max_similarity_to_set(q, self._buf[: self._n])
        d, i = self._index.search(q, 1)
        sims = np.where(i[:, 0] >= 0, d[:, 0], -np.inf).astype(np.float32)
        return sims, i[:, 0].astype(np.int64)
