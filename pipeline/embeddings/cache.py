"""On-disk embedding cache keyed by (embedder name, text hash): reruns embed only new texts.

Layout: `<root>/<embedder name, slugged>/seg-<uuid>.vecs.npy` (float16 rows)
and `seg-<uuid>.keys.npy` (16-byte xxh3-128 digests of the texts, same order).
The keys file is written after its vectors, atomically, so a segment whose
keys exist is complete; a kill leaves at worst an orphan vectors file (a failed
write, such as a full disk, removes it at once).
Segments are memory-mapped, so a cache of millions of rows costs only its
sorted key index (24 bytes a row) in memory. Every writer adds new segments
with unique names, so concurrent runs never clobber each other.

Vectors are stored as float16 and every caller gets them back the same way,
whether they were just computed or read: a rerun sees bit-identical vectors.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Sequence

import numpy as np
import xxhash

from ..store.atomic import atomic_write_npy
from .embedder import Embedder, unit_rows

KEY_DTYPE = np.dtype("S16")


def text_keys(texts: Sequence[str]) -> np.ndarray:
    return np.array([xxhash.xxh3_128_digest(t.encode("utf-8")) for t in texts], dtype=KEY_DTYPE)


def from_f16(stored: np.ndarray) -> np.ndarray:
    """Stored float16 rows as the float32 unit rows every caller computes on (renormalised after rounding)."""
    return unit_rows(stored)


def to_stored(vectors: np.ndarray) -> np.ndarray:
    """What a vector becomes once stored: float16, back as float32 unit rows (same bits on every rerun)."""
    return from_f16(np.asarray(vectors, dtype=np.float16))


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


class EmbeddingCache:
    """Embeddings of one embedder, by text hash. `encode(texts)` serves hits and embeds the rest."""

    def __init__(self, root: str | Path, embedder: Embedder):
        self.embedder = embedder
        self.dir = Path(root) / _slug(embedder.name)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0
        self._segments: list[np.ndarray] = []   # memory-mapped float16 vectors
        keys, locs = [], []
        for kf in sorted(self.dir.glob("seg-*.keys.npy")):
            vf = kf.with_name(kf.name.replace(".keys.npy", ".vecs.npy"))
            if not vf.exists():
                continue
            k = np.load(kf)
            v = np.load(vf, mmap_mode="r")
            if len(k) != len(v) or v.shape[1] != embedder.dim:
                continue  # foreign or damaged segment: ignore, never serve wrong vectors
            seg = len(self._segments)
            self._segments.append(v)
            keys.append(k)
            locs.append(np.stack([np.full(len(k), seg, np.int64), np.arange(len(k), dtype=np.int64)], 1))
        self._set_index(keys, locs)

    def _set_index(self, keys: list[np.ndarray], locs: list[np.ndarray]) -> None:
        if keys:
            k = np.concatenate(keys)
            loc = np.concatenate(locs)
            order = np.argsort(k, kind="stable")
            self._keys, self._locs = k[order], loc[order]
        else:
            self._keys, self._locs = np.zeros(0, KEY_DTYPE), np.zeros((0, 2), np.int64)
        # Keys added since the sorted index was built: a dict, merged into the
        # index once it grows, so appending a shard never re-sorts everything.
        self._pending: dict[bytes, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self._keys) + len(self._pending)

    def _lookup(self, keys: np.ndarray) -> list[tuple[int, int] | None]:
        """(segment, row) of each key, or None."""
        found: list[tuple[int, int] | None] = [None] * len(keys)
        if len(self._keys):
            pos = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
            for i in np.nonzero(self._keys[pos] == keys)[0]:
                seg, row = self._locs[pos[i]]
                found[i] = (int(seg), int(row))
        if self._pending:
            for i, k in enumerate(keys.tolist()):
                if found[i] is None and k in self._pending:
                    found[i] = self._pending[k]
        return found

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 unit rows for `texts` (via float16), embedding only texts not seen before."""
        texts = list(texts)
        out = np.zeros((len(texts), self.embedder.dim), dtype=np.float32)
        if not texts:
            return out
        keys = text_keys(texts)
        found = self._lookup(keys)
        miss = np.array([i for i, f in enumerate(found) if f is None], dtype=np.int64)
        for i, f in enumerate(found):
            if f is not None:
                out[i] = self._segments[f[0]][f[1]]  # float16 -> float32 here, normalised below
        self.hits += len(texts) - len(miss)
        if len(miss):
            # Identical texts inside one call are embedded once.
            uniq_keys, first, inverse = np.unique(keys[miss], return_index=True, return_inverse=True)
            vecs = np.asarray(self.embedder.encode([texts[miss[f]] for f in first]), dtype=np.float16)
            self.misses += len(uniq_keys)
            self._append(uniq_keys, vecs)
            out[miss] = vecs.astype(np.float32)[inverse.reshape(-1)]
        return from_f16(out)

    def _append(self, keys: np.ndarray, vecs: np.ndarray) -> None:
        name = f"seg-{uuid.uuid4().hex[:16]}"
        vecs_path = self.dir / f"{name}.vecs.npy"
        atomic_write_npy(vecs_path, vecs)
        try:
            atomic_write_npy(self.dir / f"{name}.keys.npy", keys)
        except BaseException:  # a full disk: the vectors without their keys would only hold the space
            vecs_path.unlink(missing_ok=True)
            raise
        seg = len(self._segments)
        self._segments.append(vecs)
        for row, k in enumerate(keys.tolist()):
            self._pending[k] = (seg, row)
        if len(self._pending) > max(100_000, len(self._keys) // 4):
            pk = np.array(list(self._pending), dtype=KEY_DTYPE)
            pl = np.array(list(self._pending.values()), dtype=np.int64).reshape(-1, 2)
            self._set_index([self._keys, pk], [self._locs, pl])


class NoCache:
    """The same interface without a disk: every call embeds (cache = false)."""

    def __init__(self, embedder: Embedder):
        self.embedder = embedder
        self.hits = 0
        self.misses = 0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.misses += len(texts)
        return to_stored(self.embedder.encode(list(texts)))
