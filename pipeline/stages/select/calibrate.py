"""The diversity threshold relative to the embedder: a quantile of the pool's own nearest-neighbour cosines.

Deita's 0.9 was set on LLaMA last-token states, where unrelated
conversations already sit near 0.8; in MiniLM space 0.9 is a near-paraphrase
(see docs/DEPARTURES.md for the measured distributions). A cosine only means
something next to the others of its space, so the default threshold is read
off the pool: embed a sample of the candidates the walk will reach (seeded,
so a rerun resolves the same value), find each one's nearest neighbour in
the sample, and take the `quantile` of those cosines. A row is then too
similar when it is closer to a row already selected than that share of the
pool is to its own nearest neighbour, in any embedder.

The sample is at most `rows` rows, and no more than the budget: the walk
compares each candidate with the selected set, which is at most the budget
in size, and a nearest neighbour in a larger set is closer. Reads vectors
from the walk's source (with the embedding cache, the walk then finds them
there; with `cache = false` the sample is embedded twice); writes nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SEED = 20240101  # fixed: the sample, hence the threshold, is the same on every rerun
BLOCK = 2048


def nearest_neighbour_cosines(vecs: np.ndarray) -> np.ndarray:
    """Each unit row's largest cosine to another row of `vecs`."""
    n = len(vecs)
    out = np.full(n, -np.inf, np.float32)
    for a in range(0, n, BLOCK):
        g = vecs[a:a + BLOCK] @ vecs.T
        g[np.arange(len(g)), np.arange(a, a + len(g))] = -np.inf
        out[a:a + BLOCK] = g.max(axis=1)
    return out


def sample_positions(reach: np.ndarray, rows: int) -> np.ndarray:
    """Up to `rows` input positions drawn from `reach` (the candidates the walk will see), sorted."""
    if len(reach) <= rows:
        return np.sort(reach)
    return np.sort(np.random.default_rng(SEED).choice(reach, rows, replace=False))


def resolve(source, reach: np.ndarray, quantile: float, rows: int) -> dict[str, Any]:
    """The threshold for this pool: {mode, quantile, value, sample_rows, nn_cosine (percentiles of the sample)}."""
    pos = sample_positions(reach, rows)
    info: dict[str, Any] = {"mode": "quantile", "quantile": quantile, "sample_rows": int(len(pos))}
    if len(pos) < 2:  # nothing to compare: no row can repeat another
        return dict(info, value=1.0, nn_cosine=None)
    nn = nearest_neighbour_cosines(np.ascontiguousarray(source.fetch(pos), dtype=np.float32))
    value = float(np.quantile(nn, quantile))
    pct = {f"p{int(q * 100)}": round(float(np.quantile(nn, q)), 4) for q in (0.1, 0.5, 0.9, 0.99)}
    return dict(info, value=min(value, 1.0), nn_cosine=pct)  # unrounded: a rounded-down value would prune the top pair
