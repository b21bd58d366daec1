"""The `[semdedup]` config section: which embedder and text (EmbeddingSection's keys), which search, which threshold."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ...embeddings.encoder import EmbeddingSection


class SemdedupConfig(EmbeddingSection):
    verify: bool = Field(False, description="with fast: re-check the fast path's candidate pairs with the full model (full-model precision, fast-path speed on the bulk)")
    threshold: float = Field(0.95, gt=0, le=1, description="cosine at or above which two rows are near-duplicates (full-model scale)")
    fast_threshold: float | None = Field(None, gt=0, le=1, description="threshold on the fast model's scale; default threshold - 0.03 (threshold - 0.12 as the candidate cut with verify)")
    search: Literal["auto", "exact", "ivf", "kmeans"] = Field("auto", description="pair search: exact blocked matmul, FAISS IVF (approximate), SemDeDup-style k-means; auto = exact up to exact_max_rows")
    exact_max_rows: int = Field(150_000, gt=0, description="auto search uses exact search up to this many rows, IVF above")
    nlist: int | None = Field(None, gt=0, description="IVF cells; default 4*sqrt(rows) (at most rows/40)")
    nprobe: int = Field(12, gt=0, description="IVF cells each row probes (recall vs time; 12 found 99.8% of exact pairs at 1M rows)")
    kmeans_clusters: int | None = Field(None, gt=0, description="k for the k-means mode; default rows/2000")
    against: str | None = Field(None, description="a published dataset: rows near-duplicating any of its rows are dropped")

    @model_validator(mode="after")
    def _verify_needs_fast(self) -> "SemdedupConfig":
        if self.verify and not self.fast:
            raise ValueError("verify only applies with fast = true (the full model needs no re-check)")
        return self

    def search_threshold(self) -> float:
        """The cut applied to the embedder that searches (fast or full)."""
        if not self.fast:
            return self.threshold
        if self.fast_threshold is not None:
            return self.fast_threshold
        # Measured on ~7k real rows (scripts/bench_semdedup.py --part agree): at
        # 0.92 the fast model finds ~93% of the full model's 0.95 pairs; at 0.83
        # ~99%, which the full-model re-check then makes exact.
        return round(max(0.0, self.threshold - (0.12 if self.verify else 0.03)), 6)
