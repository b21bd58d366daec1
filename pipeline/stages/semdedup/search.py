"""Near-duplicate pair search over unit vectors: exact blocked matmul, FAISS IVF, SemDeDup k-means.

Every method returns `Pairs` (i < j, cosine >= threshold). Candidates are
collected in float32 with a small margin below the threshold and then every
candidate's cosine is recomputed in float64 from the vectors alone, so whether
a pair counts never depends on how rows were blocked, batched or ordered.

- exact: tiles of the upper triangle of X @ X.T (BLAS); N^2 work, the truth.
- ivf: an inverted file (cells trained by FAISS k-means), each row probing its
  `nprobe` nearest of `nlist` cells, the scans done as BLAS products per cell;
  recall against exact is measured by scripts/bench_semdedup.py, and on every
  approximate stage run on a sample of rows (`sampled_recall`).
- kmeans: SemDeDup (Abbas et al. 2023): spherical k-means, then exact pairs
  inside each cluster only (pairs split across clusters are missed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...embeddings.neighbors import max_similarity_to_set

MARGIN = 1e-3  # float32 candidates this far below the threshold are re-checked exactly
# IVF cells each row probes. At 1M rows (bench_semdedup.py --part search) 12 found 99.8% of the
# exact pairs (16: 99.9%, 8: 99.7%), at ~2/3 of the CPU time of 16.
NPROBE = 12


@dataclass
class Pairs:
    i: np.ndarray    # int64, i < j
    j: np.ndarray    # int64
    sim: np.ndarray  # float64 cosine, recomputed exactly

    def __len__(self) -> int:
        return len(self.i)

    @staticmethod
    def empty() -> "Pairs":
        return Pairs(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))

    def as_set(self) -> set[tuple[int, int]]:
        return set(zip(self.i.tolist(), self.j.tolist()))


def exact_sims(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of unit rows a[k], b[k] in float64: the same value however it was found."""
    return np.einsum("ij,ij->i", a.astype(np.float64), b.astype(np.float64))


def pair_sims(x: np.ndarray, i: np.ndarray, j: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """`exact_sims(x[i], x[j])` a chunk at a time: millions of pairs without gigabytes of float64 copies."""
    out = np.empty(len(i), np.float64)
    for a in range(0, len(i), chunk):
        out[a:a + chunk] = exact_sims(x[i[a:a + chunk]], x[j[a:a + chunk]])
    return out


def _finish(x: np.ndarray, i: np.ndarray, j: np.ndarray, threshold: float) -> Pairs:
    if not len(i):
        return Pairs.empty()
    i, j = np.minimum(i, j).astype(np.int64), np.maximum(i, j).astype(np.int64)
    key = np.unique(i * len(x) + j)  # dedupe (a pair may be seen from both ends) and sort
    i, j = key // len(x), key % len(x)
    sim = pair_sims(x, i, j)
    keep = sim >= threshold
    return Pairs(i[keep], j[keep], sim[keep])


def exact_pairs(x: np.ndarray, threshold: float, block: int = 4096) -> Pairs:
    """All pairs with cosine >= threshold, by tiles of the upper triangle of X @ X.T."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    cut = threshold - MARGIN
    ii, jj = [], []
    for a in range(0, n, block):
        xa = x[a:a + block]
        for b in range(a, n, 2 * block):
            s = xa @ x[b:b + 2 * block].T
            if b == a:  # diagonal tile: only j > i
                s[np.tril_indices(len(xa), 0, s.shape[1])] = -1.0
            r, c = np.nonzero(s >= cut)
            ii.append(r + a)
            jj.append(c + b)
    if not ii:
        return Pairs.empty()
    return _finish(x, np.concatenate(ii), np.concatenate(jj), threshold)


def default_nlist(n: int) -> int:
    # ~4 sqrt(N) cells, and at least ~40 training points per cell as FAISS wants.
    return max(1, min(int(4 * math.sqrt(n)), n // 40))


def _train_sample(x: np.ndarray, size: int) -> np.ndarray:
    # Evenly strided over the caller's (canonical, id-sorted) order: the same
    # sample on every run, whatever order the rows arrived in.
    step = max(1, len(x) // size)
    return np.ascontiguousarray(x[::step][:size])


def build_ivf(x: np.ndarray, nlist: int | None = None, seed: int = 0):
    """A FAISS IndexIVFFlat over `x` (inner product), for nearest-neighbour queries against it."""
    import faiss
    n, d = x.shape
    nlist = nlist or default_nlist(n)
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.cp.niter = 10
    index.train(_train_sample(x, min(n, nlist * 40)))
    index.add(x)
    return index


def ivf_pairs(x: np.ndarray, threshold: float, nlist: int | None = None, nprobe: int = NPROBE,
              seed: int = 0) -> Pairs:
    """Approximate: an inverted file (IVF) whose cell scans are matrix products.

    Every row lives in its nearest of `nlist` k-means cells and probes its
    `nprobe` nearest cells; a pair is found when one row's cell is among the
    other's probes (FAISS IndexIVFFlat's rule). FAISS trains the cells and
    finds each row's probes; the scans are done per cell as one BLAS product
    (probing rows x member rows), ~5x faster on a CPU than FAISS's own
    per-vector scan (IndexIVFFlat.range_search) with the same pairs.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    if n < 2:
        return Pairs.empty()
    nlist = min(nlist or default_nlist(n), n)
    nprobe = min(nprobe, nlist)
    probes = cell_probes(x, nlist, nprobe, seed)
    home = probes[:, 0]
    members = _groups(home, nlist)                                   # cell -> rows living there
    flat_cells = probes.reshape(-1)
    probers = _groups(flat_cells, nlist, np.repeat(np.arange(n), nprobe))  # cell -> rows probing it
    cut = threshold - MARGIN
    ii, jj = [], []
    for c in range(nlist):
        m, q = members[c], probers[c]
        if not len(m) or not len(q):
            continue
        for a in range(0, len(q), 8192):  # bounded memory on a huge cell
            qa = q[a:a + 8192]
            r, k = np.nonzero(x[qa] @ x[m].T >= cut)
            keep = qa[r] != m[k]
            ii.append(qa[r][keep])
            jj.append(m[k][keep])
    if not ii:
        return Pairs.empty()
    return _finish(x, np.concatenate(ii), np.concatenate(jj), threshold)


COARSE_DIMS = 64  # dimensions the cells are built and probed in (see cell_probes)


def coarse_projection(sample: np.ndarray, dims: int = COARSE_DIMS) -> np.ndarray | None:
    """(d, dims) top eigenvectors of the sample's second-moment matrix, or None when d <= dims.

    Uncentred PCA: for unit rows it keeps the most of every inner product
    (81% of the squared norm at 64 of the fast model's 256 dims, measured).
    Computed in float64 from the fixed training sample: the same on every run.
    """
    if sample.shape[1] <= dims:
        return None
    s = sample.astype(np.float64)
    _, vecs = np.linalg.eigh(s.T @ s)
    return np.ascontiguousarray(vecs[:, ::-1][:, :dims], dtype=np.float32)


def cell_probes(x: np.ndarray, nlist: int, nprobe: int, seed: int = 0,
                coarse_dims: int | None = COARSE_DIMS) -> np.ndarray:
    """(n, nprobe) nearest k-means cells of each row, nearest first (column 0 is its home cell).

    The cells live in a `coarse_dims` projection of the vectors: cells only
    decide which rows are compared (the comparisons use every dimension), a
    projection never moves near-duplicates apart (it only shrinks distances),
    and training plus probing 1M rows against 4k cells costs a quarter of the
    full-width work. Measured at 1M rows (scripts/bench_semdedup.py): CPU time
    of the whole search 161 s -> 84 s (nprobe 16 -> 12), recall 0.9996 -> 0.998.
    """
    if nlist == 1:  # one cell (a small input): every row is compared with every row
        return np.zeros((len(x), 1), np.int64)
    import faiss
    sample = _train_sample(x, min(len(x), nlist * 40))  # FAISS asks for >= 39 points a cell
    proj = coarse_projection(sample, coarse_dims) if coarse_dims else None
    if proj is not None:
        sample = _unit(sample @ proj)
    km = faiss.Kmeans(sample.shape[1], nlist, niter=10, seed=seed, spherical=True, verbose=False)
    km.train(sample)
    out = np.empty((len(x), nprobe), np.int64)
    for a in range(0, len(x), 262_144):  # the projected copy a block at a time
        block = x[a:a + 262_144] if proj is None else _unit(x[a:a + 262_144] @ proj)
        out[a:a + len(block)] = km.index.search(np.ascontiguousarray(block), nprobe)[1]
    return out


def _unit(z: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(z / norms, dtype=np.float32)


def _groups(keys: np.ndarray, k: int, values: np.ndarray | None = None) -> list[np.ndarray]:
    """values (default: positions) grouped by key 0..k-1, each group in ascending order."""
    order = np.argsort(keys, kind="stable")
    vals = order if values is None else values[order]
    bounds = np.searchsorted(keys[order], np.arange(k + 1))
    return [vals[bounds[c]:bounds[c + 1]] for c in range(k)]


def kmeans_labels(x: np.ndarray, k: int, seed: int = 0, niter: int = 20) -> np.ndarray:
    import faiss
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, spherical=True, verbose=False)
    km.train(_train_sample(x, min(len(x), k * 256)))
    _, labels = km.index.search(x, 1)
    return labels[:, 0]


def kmeans_pairs(x: np.ndarray, threshold: float, k: int | None = None, seed: int = 0) -> Pairs:
    """SemDeDup: cluster with spherical k-means, then exact pairs within each cluster."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    k = max(1, min(k or n // 2000, n // 40 or 1))
    if k == 1 or n < 2:
        return exact_pairs(x, threshold)
    labels = kmeans_labels(x, k, seed)
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    ii, jj = [], []
    for members in np.split(order, bounds):
        if len(members) < 2:
            continue
        p = exact_pairs(x[members], threshold)
        ii.append(members[p.i])
        jj.append(members[p.j])
    if not ii:
        return Pairs.empty()
    return _finish(x, np.concatenate(ii), np.concatenate(jj), threshold)


def find_pairs(x: np.ndarray, threshold: float, method: str = "auto", *, exact_max_rows: int = 150_000,
               nlist: int | None = None, nprobe: int = NPROBE, kmeans_clusters: int | None = None,
               seed: int = 0) -> tuple[Pairs, str]:
    """(pairs, the method actually used)."""
    if method == "auto":
        method = "exact" if len(x) <= exact_max_rows else "ivf"
    if method == "exact":
        return exact_pairs(x, threshold), method
    if method == "ivf":
        return ivf_pairs(x, threshold, nlist=nlist, nprobe=nprobe, seed=seed), method
    if method == "kmeans":
        return kmeans_pairs(x, threshold, k=kmeans_clusters, seed=seed), method
    raise ValueError(f"unknown search method {method!r}")


def nearest_in(queries: np.ndarray, base: np.ndarray, *, approximate: bool = False,
               nprobe: int = NPROBE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(cosine, index) of each query's nearest row of `base` (-inf, -1 when base is empty)."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if not approximate or len(base) < 10_000:
        _, idx = max_similarity_to_set(q, base)
    else:
        index = build_ivf(np.ascontiguousarray(base, dtype=np.float32), seed=seed)
        index.nprobe = min(nprobe, index.nlist)
        _, i = index.search(q, 1)
        idx = i[:, 0].astype(np.int64)
    found = idx >= 0
    exact = np.full(len(q), -np.inf)
    if found.any():
        exact[found] = exact_sims(q[found], np.asarray(base, dtype=np.float32)[idx[found]])
    return exact, idx


def sampled_recall(x: np.ndarray, found: Pairs, threshold: float, sample: int = 1000,
                   seed: int = 0) -> dict[str, float | int]:
    """Recall of `found` against exact search, measured on the pairs of `sample` random rows.

    Exact truth for a sample costs sample x N dot products (seconds at 1M rows),
    so every approximate run can say how much it missed.
    """
    n = len(x)
    rng = np.random.default_rng(seed)
    q = np.sort(rng.choice(n, min(sample, n), replace=False))
    ii, jj = [], []
    for a in range(0, len(q), 1024):
        s = x[q[a:a + 1024]] @ x.T
        r, c = np.nonzero(s >= threshold - MARGIN)
        ii.append(q[a:a + 1024][r])
        jj.append(c)
    i, j = np.concatenate(ii), np.concatenate(jj)
    keep = i != j
    truth = _finish(x, i[keep], j[keep], threshold).as_set()
    in_q = np.isin(found.i, q) | np.isin(found.j, q)
    got = set(zip(found.i[in_q].tolist(), found.j[in_q].tolist()))
    return {"sample_rows": int(len(q)), "sample_pairs": len(truth),
            "recall": round(len(got & truth) / len(truth), 4) if truth else 1.0}


def pair_recall(found: Pairs, truth: Pairs) -> float:
    """Fraction of `truth` pairs that `found` also has (1.0 when truth is empty)."""
    if not len(truth):
        return 1.0
    return len(found.as_set() & truth.as_set()) / len(truth)
