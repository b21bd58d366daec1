"""The `[select]` config section: budget, diversity threshold, quotas, score floors, embeddings (EmbeddingSection's keys).

Defaults follow Deita's repr filter (walk by combined score, reject a row
too similar to an already-selected one) and LIMA (stratification as
optional quotas per task kind or origin), with the departures
docs/DEPARTURES.md lists:

- the embedded text is the whole conversation (`text = "conversation"`), as
  Deita embeds it, cut to the embedder's window (`text_chars`);
- the threshold is relative to the embedder: by default the
  `threshold_quantile` (0.9) of the pool's own nearest-neighbour cosines,
  resolved per run on a sample and recorded in the manifest; an absolute
  `threshold = 0.9` (Deita's number, in Deita's space) stays possible;
- the budget defaults to the release size: `[export] tier` or `rows` when
  the config names one (in `distill run` and `distill select` alike, unless
  selecting `against` a published pool, where the tier sizes the whole
  release, not tonight's rows), else DEFAULT_BUDGET (10,000, the larger of
  Deita's released sets). `budget = "all"` selects every row that passes.
  A budget larger than the pool selects every row that passes the walk.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ...embeddings.encoder import EmbeddingSection

DEFAULT_BUDGET = 10_000


class SelectConfig(EmbeddingSection):
    # The embedder keys are EmbeddingSection's; select's full model defaults to the CPU.
    device: Literal["cpu", "cuda", "auto"] = Field("cpu", description="where the full model runs: cpu, cuda, or auto (cuda when present)")
    fields: list[str] = Field(default_factory=lambda: ["instruction", "input"],
                              description="with text = 'fields': the columns joined into the embedded text (semdedup's, so "
                                          "select reuses its cached and stored embeddings)")
    budget: int | Literal["all"] | None = Field(
        None, description="rows to select; default: [export] tier/rows when the config names one, else 10,000 (Deita's 10k); "
                          "'all': every row that passes the walk")
    threshold: float | None = Field(
        None, gt=0, le=1, description="absolute cosine: reject a row whose cosine to an already-selected row is above this "
                                      "(Deita's 0.9 was set in LLaMA space); default: relative, see threshold_quantile")
    threshold_quantile: float = Field(
        0.9, gt=0, lt=1, description="with no absolute threshold: the threshold is this quantile of the pool's own "
                                     "nearest-neighbour cosines (measured per run on a sample; the value is in the manifest)")
    calibration_rows: int = Field(10_000, ge=2, description="rows sampled (seeded) to measure that distribution; at most the budget")
    text: Literal["conversation", "fields"] = Field(
        "conversation", description="what is embedded: the whole conversation (messages, else instruction, input and output; "
                                    "system turns left out), as Deita; 'fields': the `fields` columns (semdedup's text)")
    text_chars: int | None = Field(
        None, gt=0, description="conversation text cut to this many characters, shared fairly between turns (short turns whole, "
                                "each long turn's head); default: the embedder's token window x 4 (MiniLM: 1,024)")
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

    @field_validator("budget")
    @classmethod
    def _budget(cls, v: int | str | None) -> int | str | None:
        if isinstance(v, bool) or (isinstance(v, int) and v <= 0):
            raise ValueError(f"budget is a row count > 0 or 'all', got {v!r}")
        return v

    def budget_rows(self) -> int | None:
        """The walk's budget: None ('all') walks every candidate; unset means DEFAULT_BUDGET."""
        if self.budget == "all":
            return None
        return DEFAULT_BUDGET if self.budget is None else int(self.budget)

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
