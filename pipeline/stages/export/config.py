"""The `[export]` config section: release size, shard size, held-out split, card fields, columns, reasoning, format.

Size: `tier` ("100k", "1m", "10m") or `rows`; with neither, the whole input
(every selected row) is released, which is what `distill run` does on the
embedded demo. A tier or row count larger than the input is an error that
says how many rows are available: a "1M release" is never silently smaller.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ...config import Section
from ...records import COLUMN_NAMES

TIERS = {"100k": 100_000, "1m": 1_000_000, "10m": 10_000_000}

DEFAULT_COLUMNS = ["messages", "id", "origin", "round", "parent_id", "root_id", "task_kind", "strategy",
                   "teacher_backend", "teacher_model", "prompt_template", "prompt_hash",
                   "quality", "complexity", "accuracy", "score", "flags", "run_id"]


class ExportConfig(Section):
    tier: Literal["100k", "1m", "10m"] | None = Field(None, description="release size: 100k, 1m or 10m rows (strict)")
    rows: int | None = Field(None, gt=0, description="release size in rows (strict); default with no tier: every input row")
    rows_per_shard: int = Field(100_000, gt=0, description="rows per train-NNNNN-of-NNNNN.parquet shard")
    heldout: int | float = Field(0, description="held-out 'test' split carved from the release: an int row count or a float share in [0, 1)")
    heldout_stable: bool = Field(False, description="draw each row's split from its own hash (test when below the heldout share): "
                                                   "the test share is approximate, but a row never moves between splits as the pool grows "
                                                   "(refresh uses this); needs heldout as a share")
    license: str = Field("other", description="licence field of the dataset card (e.g. apache-2.0, cc-by-4.0); check your teacher's terms")
    license_name: str | None = Field(None, description="with license = other: the card's license_name, an id for the "
                                     "terms (default: teacher-terms)")
    license_link: str | None = Field(None, description="with license = other: the card's license_link, a URL or a file "
                                     "in the release (default: LICENSE.md, written by export, naming the teachers)")
    pretty_name: str | None = Field(None, description="dataset name on the card; default: the folder name")
    language: list[str] = Field(default_factory=lambda: ["en"], description="languages listed on the card")
    reasoning: Literal["answer_only", "think_tags", "field"] = Field(
        "field", description="where the teacher's reasoning goes: field (a `reasoning` column; `messages` carry the "
        "answer only), think_tags (`<think>...</think>` before the answer in the assistant turn, as R1-distilled "
        "models are trained; no column) or answer_only (dropped)")
    format: Literal["messages", "prompt_completion"] = Field(
        "messages", description="how each example is written: messages (one `messages` chat column) or "
        "prompt_completion (TRL's conversational `prompt` = the turns before the last assistant turn and "
        "`completion` = [that turn], so trainers mask the prompt with no chat-template work)")
    with_logprobs: bool = Field(False, description="also write the teacher's top-k token logprobs (kept by a generation "
                                "stage's `logprobs` option) as logprobs-<shard>.parquet, row-aligned with each shard")
    columns: list[str] = Field(default_factory=lambda: list(DEFAULT_COLUMNS),
                               description="columns written (messages is always first); any record-schema column")

    @field_validator("heldout")
    @classmethod
    def _heldout(cls, v: int | float) -> int | float:
        if isinstance(v, bool) or v < 0 or (isinstance(v, float) and v >= 1):
            raise ValueError(f"heldout is an int count >= 0 or a float share in [0, 1), got {v!r}")
        return v

    @field_validator("columns")
    @classmethod
    def _columns(cls, v: list[str]) -> list[str]:
        bad = [c for c in v if c not in COLUMN_NAMES]
        if bad:
            raise ValueError(f"unknown columns {bad}; pick from the record schema")
        return ["messages"] + [c for c in dict.fromkeys(v) if c != "messages"]

    @field_validator("license_link")
    @classmethod
    def _license_link(cls, v: str | None) -> str | None:
        if v is not None and "://" not in v and (not v or "/" in v or "\\" in v or v.startswith(".")
                                                  or v in ("README.md", "manifest.json") or v.endswith(".parquet")):
            raise ValueError(f"license_link {v!r}: give a URL or a plain file name for the release folder "
                             "(e.g. LICENSE.md)")
        return v

    @model_validator(mode="after")
    def _one_size(self) -> "ExportConfig":
        if self.license != "other" and (self.license_name or self.license_link):
            raise ValueError(f"license_name and license_link go with license = other (the Hub reads them only "
                             f"then), not with {self.license!r}")
        if self.tier is not None and self.rows is not None:
            raise ValueError("give tier or rows, not both")
        if self.heldout_stable and isinstance(self.heldout, int) and self.heldout > 0:
            raise ValueError(f"heldout_stable draws each row's split from its own hash: give heldout as a share "
                             f"(e.g. 0.01), not a count ({self.heldout})")
        return self

    def requested_rows(self) -> int | None:
        """Rows asked for, or None for 'all available'."""
        return TIERS[self.tier] if self.tier else self.rows

    def heldout_rows(self, n: int) -> int:
        return int(self.heldout * n) if isinstance(self.heldout, float) else min(int(self.heldout), n)


def release_columns(cfg: ExportConfig) -> list[str]:
    """The columns written: `columns`, with `reasoning` right after `messages` in field mode and never otherwise
    (think_tags has it inside `messages`; answer_only drops it); in prompt_completion format `prompt` and
    `completion` stand where `messages` was."""
    cols = [c for c in cfg.columns if c != "reasoning"]
    head = ["prompt", "completion"] if cfg.format == "prompt_completion" else cols[:1]
    return head + (["reasoning"] if cfg.reasoning == "field" else []) + cols[1:]
