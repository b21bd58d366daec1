"""The `[select]` config section: budget, diversity threshold, quotas, score floors, embeddings (EmbeddingSection's keys).

Defaults follow METHODS.md 4.3 (Deita's repr filter: walk by combined score,
reject a row whose cosine similarity to an already-selected row exceeds 0.9)
and 4.2 (LIMA stratification as optional quotas per task kind or origin).

`budget = None` (the default) selects every row that passes: the walk then
only removes rows too similar to better-scored ones. Set a budget (Deita:
6,000 or 10,000; LIMA: 1,000) for a fixed-size release.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ...embeddings.encoder import EmbeddingSection


class SelectConfig(EmbeddingSection):
    # The embedder keys are EmbeddingSection's; select's full model defaults to the CPU.
    device: Literal["cpu", "cuda", "auto"] = Field("cpu", description="where the full model runs: cpu, cuda, or auto (cuda when present)")
    budget: int | None = Field(None, gt=0, description="rows to select; default: every row that passes the walk")
    threshold: float = Field(0.9, gt=0, le=1, description="reject a row whose cosine to an already-selected row is above this (Deita 0.9)")
    quota_by: Literal["task_kind", "origin", "hard"] | None = Field(
        None, description="stratify by this column (LIMA), or by `distill hard`'s flag (strata hard, easy, none): see quotas")
    quotas: dict[str, int | float] = Field(
        default_factory=dict,
        description="per stratum: an int is a row count, a float in (0, 1] a share of the budget; '*' applies to strata not listed "
                    "(unlisted strata are unlimited without it); a null task_kind/origin is the stratum 'none'")
    min_score: float | None = Field(None, description="drop rows whose combined score is below this")
    min_quality: float | None = Field(None, description="drop rows whose quality score is below this")
    min_accuracy: float | None = Field(None, description="drop rows whose accuracy is below this (AlpaGasus keeps >= 4.5)")
    unscored: Literal["drop", "last"] = Field(
        "drop", description="rows with a null score (failed or unparseable judgment): drop them (reason unscored) or walk them last, by id")

    embeddings: str | None = Field(None, description="precomputed embeddings: a .npy of unit rows in the input's row order (float16/32)")
    against: str | None = Field(None, description="a published dataset whose rows count as already selected: a row too similar to one of them "
                                                  "is dropped (too_similar, naming it); e.g. the release pool, so a nightly refresh stays diverse across nights")

    window_rows: int = Field(262_144, gt=0, description="candidates embedded and held in memory at once (dim x 4 bytes each)")
    exact_limit: int = Field(50_000, gt=0, description="the selected set is searched exactly up to this size (Deita exactly), then through a FAISS IVF index")
    nprobe: int = Field(16, gt=0, description="IVF cells searched per candidate past exact_limit (recall vs time)")
    block: int = Field(1024, gt=0, description="candidates decided per block (the result equals the row-at-a-time walk)")

    @model_validator(mode="after")
    def _against_needs_text(self) -> "SelectConfig":
        if self.against and self.embeddings:
            raise ValueError("against embeds the published rows' text; it cannot be combined with precomputed embeddings")
        return self

    @field_validator("quotas")
    @classmethod
    def _quotas(cls, v: dict[str, int | float]) -> dict[str, int | float]:
        for k, q in v.items():
            if isinstance(q, bool) or q < 0 or (isinstance(q, float) and q > 1):
                raise ValueError(f"quota {k!r}: an int count >= 0 or a float share in (0, 1], got {q!r}")
        return v

    def quota_counts(self, strata: list[str], budget: int | None) -> dict[str, int | None]:
        """Resolved cap per stratum name (None: unlimited)."""
        out: dict[str, int | None] = {}
        for s in strata:
            q = self.quotas.get(s, self.quotas.get("*"))
            if q is None:
                out[s] = None
            elif isinstance(q, float):
                if budget is None:
                    raise ValueError(f"quota {s!r} is a share ({q}) but no budget is set; give a count or a budget")
                out[s] = int(q * budget)
            else:
                out[s] = int(q)
        return out
