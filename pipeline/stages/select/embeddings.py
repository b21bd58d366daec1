"""Where the selection walk gets its vectors: embedded text (shared cache) or a precomputed .npy.

Both sources answer `fetch(positions) -> (len, dim) float32 unit rows` for
input positions in any order, reading the input once per call in row order.
The walk asks for one window of candidates at a time (the best-scored rows
it has not seen yet), so only the rows it can reach are ever embedded or
held in memory: selecting 1M rows from a 10M pool touches ~1M vectors.

Text is built exactly as the semdedup stage builds it (the chosen fields,
non-empty ones, joined by a blank line) and goes through the same embedding
cache (keyed by embedder name and text hash), so every row semdedup embedded
is a cache hit here.
"""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa

from ...errors import InputFileError
from ...store import Dataset

ENCODE_CHUNK = 8192


def embed_text(parts: Sequence[str | None]) -> str:
    """The embedded text of one row: its non-empty fields joined by a blank line (as semdedup does)."""
    return "\n\n".join(p for p in parts if p)


def _normalise(x: np.ndarray) -> np.ndarray:
    """Unit rows, in place when `x` is already float32 (a window can be a gigabyte: no second copy)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    x /= norms
    return x


class TextSource:
    """Embeds the rows' text with `encode` (an embedder or the embedding cache's `encode`)."""

    def __init__(self, ds: Dataset, fields: list[str], encode: Callable[[list[str]], np.ndarray],
                 name: str, batch_rows: int = 65536):
        self.ds = ds
        self.fields = fields
        self.encode = encode
        self.name = name
        self.batch_rows = batch_rows

    def texts(self, positions: np.ndarray) -> list[str]:
        order = np.argsort(positions, kind="stable")
        sorted_pos = positions[order]
        out: list[str] = [""] * len(positions)
        offset = 0
        if not len(positions):
            return out
        for batch in self.ds.iter_batches(columns=self.fields, batch_size=self.batch_rows):
            n = batch.num_rows
            lo, hi = np.searchsorted(sorted_pos, [offset, offset + n])
            if hi > lo:
                sub = batch.take(pa.array(sorted_pos[lo:hi] - offset))
                cols = [sub.column(f).to_pylist() for f in self.fields]
                for j, parts in enumerate(zip(*cols)):
                    out[order[lo + j]] = embed_text(parts)
            offset += n
            if offset > sorted_pos[-1]:
                break
        return out

    def fetch(self, positions: np.ndarray) -> np.ndarray:
        texts = self.texts(positions)
        parts = [_normalise(self.encode(texts[a:a + ENCODE_CHUNK])) for a in range(0, len(texts), ENCODE_CHUNK)]
        return np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)


class NpySource:
    """Precomputed vectors: a .npy of shape (input rows, dim), rows in the input's order.

    Memory-mapped; each fetch reads the wanted rows in file order and then
    tells the kernel it may drop those pages, so a 10M-row file costs only
    the window being walked.
    """

    def __init__(self, path: str | Path, n_rows: int):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputFileError(f"{self.path}: embeddings file not found")
        try:
            self.array = np.load(self.path, mmap_mode="r")
        except (ValueError, OSError) as e:
            raise InputFileError(f"{self.path}: not a .npy array ({e})") from None
        if self.array.ndim != 2 or len(self.array) != n_rows:
            raise InputFileError(f"{self.path}: shape {self.array.shape}, expected ({n_rows}, dim): "
                                 "one row per input row, in the input's order")
        self.name = f"npy:{self.path.name}"

    def fetch(self, positions: np.ndarray, chunk: int = 65_536) -> np.ndarray:
        order = np.argsort(positions, kind="stable")
        sorted_pos = positions[order]
        out = np.empty((len(positions), self.array.shape[1]), dtype=np.float32)
        mm = getattr(self.array, "_mmap", None)
        for a in range(0, len(sorted_pos), chunk):
            # Read in file order, a chunk at a time, and let the kernel drop the
            # pages right away: resident memory stays at one chunk, not the file.
            out[order[a:a + chunk]] = self.array[sorted_pos[a:a + chunk]]
            if mm is not None and hasattr(mmap, "MADV_DONTNEED"):
                mm.madvise(mmap.MADV_DONTNEED)
        return _normalise(out)


def make_source(ds: Dataset, cfg, workdir: Path, n_rows: int):
    """The configured source: `cfg.embeddings` (.npy) or the embedder through the shared cache."""
    if cfg.embeddings:
        return NpySource(cfg.embeddings, n_rows)
    from ..semdedup.cache import EmbeddingCache, NoCache
    from ..semdedup.embedder import load_embedder
    emb = load_embedder(cfg.model, fast=cfg.fast, device=cfg.device)
    if cfg.cache:
        enc = EmbeddingCache(Path(cfg.cache_dir) if cfg.cache_dir else Path(workdir) / "cache" / "embeddings", emb)
    else:
        enc = NoCache(emb)
    src = TextSource(ds, list(cfg.fields), enc.encode, emb.name)
    src.cache = enc  # hits/misses for the manifest
    return src


class AgainstSource(TextSource):
    """An `against` dataset's rows, embedded like the pool's (same fields, same encoder and cache).

    A published release pool keeps the embeddings semdedup made of its rows
    (or an upstream semdedup folder does, found as semdedup's own `--against`
    finds them); when they are this embedder's, over these fields, for every
    row, they are used as stored (`origin` "stored") instead of embedding the
    text again.
    """

    def __init__(self, ds: Dataset, like: TextSource):
        super().__init__(ds, like.fields, like.encode, like.name, like.batch_rows)
        from .scan import ids_to_numpy
        self.ids = ids_to_numpy(ds.read(columns=["id"]).column("id"))
        self.rows = len(self.ids)
        self.stored = self._stored()
        self.origin = "stored" if self.stored is not None else "embedded"

    def _stored(self) -> np.ndarray | None:
        from ..semdedup.api import stored_for
        found = stored_for(self.ds.path, [i.decode() for i in self.ids.tolist()], self.name, list(self.fields))
        if found is None:
            return None
        where = {i.encode(): k for k, i in enumerate(found[0].tolist())}
        rows = [where.get(i) for i in self.ids.tolist()]
        if any(r is None for r in rows):
            return None
        return found[1][np.asarray(rows, np.int64)]

    def fetch(self, positions: np.ndarray) -> np.ndarray:
        if self.stored is not None:
            return _normalise(self.stored[positions])
        return super().fetch(positions)


def against_source_for(ds: Dataset, source) -> AgainstSource:
    if not isinstance(source, TextSource):
        raise InputFileError("select.against embeds the published rows' text: it needs the text embedder, "
                             "not precomputed embeddings")
    return AgainstSource(ds, source)
