"""What both dedup stages (minhash, semdedup) decide the same way: clusters of duplicate pairs, and which row a
cluster keeps.

Keep policy: highest `score` (missing scores rank last), then longest output,
then smallest id, after the caller's own first keys (minhash: published rows)
and before its tie-breakers (minhash: a signature hash and the row number;
semdedup: a hash of the output). The decision depends only on the set of rows
and their values, never on the order they were read in. Reads and writes nothing.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

# keep_by key -> (column of the key table, order)
KEEP_KEYS = {"score": ("score", "descending"), "length": ("out_len", "descending"), "id": ("id", "ascending")}
KEEP_BY = ("score", "length", "id")


def keep_rank(keys: pa.Table, keep_by: Sequence[str] = KEEP_BY, first: Sequence[tuple[str, str]] = (),
              then: Sequence[tuple[str, str]] = ()) -> np.ndarray:
    """Rank of every row of `keys` under the keep policy (0 = most wanted).

    Sort keys are (column, "ascending" | "descending"): `first`, then the
    `keep_by` keys, then `then`; nulls rank last, and rows equal in every key
    keep their order in `keys` (the sort is stable).
    """
    sort_keys = [(c, o, "at_end") for c, o in [*first, *(KEEP_KEYS[k] for k in keep_by), *then]]
    rank = np.empty(keys.num_rows, np.int64)
    rank[pc.sort_indices(keys, sort_keys=sort_keys).to_numpy()] = np.arange(keys.num_rows)
    return rank


def components(n: int, i: np.ndarray, j: np.ndarray, rank: np.ndarray | None = None) -> np.ndarray:
    """The component root of each of n rows, over the pairs (i[k], j[k]).

    A root is its component's best-ranked member (least `rank`; the smallest
    index without one), so the result does not depend on the order of the pairs.
    """
    return _components(n, np.asarray(i), np.asarray(j), np.arange(n) if rank is None else rank)


@njit(cache=True)
def _find(parent, x):
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:  # path compression
        nxt = parent[x]
        parent[x] = root
        x = nxt
    return root


@njit(cache=True)
def _components(n, left, right, rank):
    parent = np.arange(n)
    for k in range(left.shape[0]):
        ra = _find(parent, left[k])
        rb = _find(parent, right[k])
        if ra != rb:
            if rank[ra] < rank[rb]:
                parent[rb] = ra
            else:
                parent[ra] = rb
    for x in range(n):
        parent[x] = _find(parent, x)
    return parent
