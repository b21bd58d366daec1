"""What is embedded and by what: the text of a row, and the encoder a config section names.

`EmbeddingSection` holds the keys `[semdedup]` and `[select]` share (model,
device, embedded fields, caches); `make_encoder(section, workdir)` builds
its embedder behind the embedding cache, the one way semdedup, select and
refresh get an encoder, so a row embedded by one is a cache hit for the
others. `text_of` / `texts_at` build the embedded text (the chosen fields,
non-empty ones, joined by a blank line) from Arrow rows or a dataset.
Reads the dataset and the embedding cache; writes cache segments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator

from ..config import Section, referenced_path
from ..store import Dataset
from .cache import EmbeddingCache, NoCache
from .embedder import Embedder, load_embedder

EMBED_FIELDS = ("instruction", "input", "output", "system", "reasoning")  # reasoning: only when configured


class EmbeddingSection(Section):
    """The embedder keys of a config section that embeds rows' text."""

    model: str = Field("minilm", description="sentence-transformers model: 'minilm' (bundled all-MiniLM-L6-v2), a local folder, or a cached name")
    fast: bool = Field(False, description="embed with the static model distilled from `model` (>= 5k rows/s on a CPU) instead of the full model")
    device: Literal["cpu", "cuda", "auto"] = Field("auto", description="where the full model runs: cpu, cuda, or auto (cuda when present)")
    batch_size: int | None = Field(None, gt=0, description="full-model batch size; default: tuned by timing a few sizes on the first rows it encodes")
    fields: list[str] = Field(default_factory=lambda: ["instruction", "input"],
                              description="columns joined into the embedded text (semdedup and select alike by default, so select reuses semdedup's cached embeddings)")
    cache: bool = Field(True, description="keep embeddings on disk keyed by (model, text hash), shared by semdedup and select: reruns embed only new rows")
    cache_dir: str | None = Field(None, description="embedding cache folder; default <workdir>/cache/embeddings")
    model_cache_dir: str | None = Field(None, description="where the distilled fast model is kept; default ~/.cache/distill/models")

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, v: list[str]) -> list[str]:
        bad = [f for f in v if f not in EMBED_FIELDS]
        if bad or not v:
            raise ValueError(f"fields must be a non-empty list from {list(EMBED_FIELDS)}, got {v}")
        return v


def make_encoder(section: EmbeddingSection, workdir: str | Path, *, embedder: Embedder | None = None,
                 notify: Callable[[str], None] | None = None) -> EmbeddingCache | NoCache:
    """The section's embedder behind the embedding cache (`NoCache` with cache = false).

    `embedder` replaces the one the section names (tests count its calls);
    `notify` hears the one line said before the fast model's first build.
    """
    emb = embedder or load_embedder(section.model, section.fast, section.device, batch_size=section.batch_size,
                                    cache_dir=Path(section.model_cache_dir) if section.model_cache_dir else None,
                                    notify=notify)
    if not section.cache:
        return NoCache(emb)
    return EmbeddingCache(Path(section.cache_dir) if section.cache_dir else Path(workdir) / "cache" / "embeddings", emb)


def text_of(table: pa.Table | pa.RecordBatch, fields: list[str]) -> list[str]:
    """The embedded text of each row: the chosen fields, non-empty ones, joined by a blank line."""
    cols = [table.column(f).to_pylist() for f in fields]
    return ["\n\n".join(v for v in vals if v) for vals in zip(*cols)]


def texts_at(ds: Dataset, positions: np.ndarray, fields: list[str], batch_rows: int = 65536,
             build: Callable[[pa.Table], list[str]] | None = None) -> list[str]:
    """The embedded text of the rows at `positions` (any order, repeats allowed), in one pass over the input.

    `build` makes the texts from a table of the `fields` columns (default: `text_of`)."""
    positions = np.asarray(positions, np.int64)
    out = [""] * len(positions)
    if not len(positions):
        return out
    order = np.argsort(positions, kind="stable")
    sp = positions[order]
    offset = 0
    for batch in ds.iter_batches(columns=fields, batch_size=batch_rows):
        lo, hi = np.searchsorted(sp, [offset, offset + batch.num_rows])
        if hi > lo:
            rows = batch.take(pa.array(sp[lo:hi] - offset))
            for o, text in zip(order[lo:hi], build(rows) if build else text_of(rows, fields)):
                out[o] = text
        offset += batch.num_rows
        if offset > sp[-1]:
            break
    return out


def check_model_path(cfg, section: str, s: "EmbeddingSection") -> None:
    """A model given as a path must be there; a name ('minilm', a cached one) is resolved when it loads."""
    if s.model.startswith(("/", ".", "~")):
        referenced_path(cfg, section, "model", s.model, kind="dir")

