"""Where the selection walk gets its vectors: embedded text (shared cache) or a precomputed .npy.

Both sources answer `fetch(positions) -> (len, dim) float32 unit rows` for
input positions in any order, reading the input once per call in row order.
The walk asks for one window of candidates at a time (the best-scored rows
it has not seen yet), so only the rows it can reach are ever embedded or
held in memory: selecting 1M rows from a 10M pool touches ~1M vectors.

Text is the whole conversation by default (`text.conversation_texts`), or
with `text = "fields"` the columns semdedup embeds. Either way it goes
through the shared encoder and cache, keyed by embedder name and the hash
of the text itself: a change of embedded text is a new key, and with
`text = "fields"` every row semdedup embedded is a cache hit here.
"""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import Callable

import numpy as np

from ...embeddings.embedder import max_tokens, unit_rows
from ...embeddings.encoder import make_encoder, texts_at
from ...embeddings.store import stored_for
from ...errors import InputFileError
from ...store import Dataset
from .scan import ids_to_numpy
from .text import COLUMNS, conversation_texts, window_chars

ENCODE_CHUNK = 8192


class TextSource:
    """Embeds the rows' text with `encode` (an embedder or the embedding cache's `encode`)."""

    def __init__(self, ds: Dataset, fields: list[str], encode: Callable[[list[str]], np.ndarray],
                 name: str, batch_rows: int = 65536, max_chars: int | None = None):
        self.ds = ds
        self.fields = fields
        self.encode = encode
        self.name = name
        self.batch_rows = batch_rows
        self.max_chars = max_chars  # None: the `fields` text; else the conversation cut to this many characters

    @property
    def text(self) -> dict:
        """What is embedded, for the manifest."""
        if self.max_chars is None:
            return {"mode": "fields", "fields": list(self.fields)}
        return {"mode": "conversation", "max_chars": self.max_chars}

    @property
    def text_tag(self) -> list[str]:
        """The embedded text as stored embeddings name it (their `fields`): conversation vectors never match
        semdedup's instruction + input ones."""
        return list(self.fields) if self.max_chars is None else [f"conversation:{self.max_chars}"]

    def texts(self, positions: np.ndarray) -> list[str]:
        if self.max_chars is None:
            return texts_at(self.ds, positions, self.fields, self.batch_rows)
        w = self.max_chars
        return texts_at(self.ds, positions, COLUMNS, self.batch_rows, build=lambda t: conversation_texts(t, w))

    def fetch(self, positions: np.ndarray) -> np.ndarray:
        texts = self.texts(positions)
        parts = [unit_rows(self.encode(texts[a:a + ENCODE_CHUNK]), in_place=True)
                 for a in range(0, len(texts), ENCODE_CHUNK)]
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
        return unit_rows(out, in_place=True)


def make_source(ds: Dataset, cfg, workdir: Path, n_rows: int):
    """The configured source: `cfg.embeddings` (.npy) or the embedder through the shared cache."""
    if cfg.embeddings:
        return NpySource(cfg.embeddings, n_rows)
    enc = make_encoder(cfg, workdir)
    chars = None if cfg.text == "fields" else (cfg.text_chars or window_chars(max_tokens(enc.embedder)))
    src = TextSource(ds, list(cfg.fields), enc.encode, enc.embedder.name, max_chars=chars)
    src.cache = enc  # hits/misses for the manifest
    return src


class AgainstSource(TextSource):
    """An `against` dataset's rows, embedded like the pool's (same fields, same encoder and cache).

    A published release pool keeps the embeddings semdedup made of its rows
    (or an upstream semdedup folder does, found as semdedup's own `--against`
    finds them); when they are this embedder's, over this text, for every
    row, they are used as stored (`origin` "stored") instead of embedding the
    text again. Semdedup stores instruction + input, so that holds with
    `text = "fields"`; the conversation text is embedded (and cached).
    """

    def __init__(self, ds: Dataset, like: TextSource):
        super().__init__(ds, like.fields, like.encode, like.name, like.batch_rows, like.max_chars)
        self.ids = ids_to_numpy(ds.read(columns=["id"]).column("id"))
        self.rows = len(self.ids)
        self.stored = self._stored()
        self.origin = "stored" if self.stored is not None else "embedded"

    def _stored(self) -> np.ndarray | None:
        found = stored_for(self.ds.path, [i.decode() for i in self.ids.tolist()], self.name, self.text_tag)
        if found is None:
            return None
        where = {i.encode(): k for k, i in enumerate(found[0].tolist())}
        rows = [where.get(i) for i in self.ids.tolist()]
        if any(r is None for r in rows):
            return None
        return found[1][np.asarray(rows, np.int64)]

    def fetch(self, positions: np.ndarray) -> np.ndarray:
        if self.stored is not None:
            return unit_rows(self.stored[positions], in_place=True)
        return super().fetch(positions)


def against_source_for(ds: Dataset, source) -> AgainstSource:
    if not isinstance(source, TextSource):
        raise InputFileError("select.against embeds the published rows' text: it needs the text embedder, "
                             "not precomputed embeddings")
    return AgainstSource(ds, source)
