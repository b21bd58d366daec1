"""The `[evol_instruct]` config section: rounds, operation weights, sampling, elimination knobs, budgets.

Defaults follow METHODS.md section 2: 4 rounds, uniform choice over the six
operations (five in-depth plus in-breadth), temperature 1 and top_p 0.95 for
evolving and answering (the official WizardLM code's values; the paper reports
top_p 0.9 for answers: we record the code's choice in every manifest).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ...config import Section

# In-depth operations first, then in-breadth; the order is the order of the
# weights in every manifest and of the per-operation counters.
OPERATIONS = ("add_constraints", "deepening", "concretizing", "increase_reasoning",
              "complicate_input", "breadth")

DEFAULT_META_TERMS = ["given prompt", "rewritten prompt", "created prompt",
                      "#given prompt#", "#rewritten prompt#", "#created prompt#"]

# Data formats the complicate-input operation names (paper appendix: XML, SQL,
# Python code, HTML, shell, JSON, tables / Markdown / LaTeX).
DEFAULT_DATA_FORMATS = ["JSON", "XML", "SQL", "Python code", "HTML", "a shell command",
                        "a Markdown table", "LaTeX"]

# How much longer than its parent an evolution may be before it counts as "far
# longer than the operation allows": words <= ratio * parent_words + slack.
# The in-depth frame allows 10-20 added words; complicate-input also adds data;
# in-breadth asks for a similar length.
DEFAULT_LENGTH_RATIO = {"add_constraints": 3.0, "deepening": 3.0, "concretizing": 3.0,
                        "increase_reasoning": 3.0, "complicate_input": 8.0, "breadth": 3.0}



def _known_operations(v: dict[str, float]) -> None:
    unknown = sorted(set(v) - set(OPERATIONS))
    if unknown:
        raise ValueError(f"unknown operations {unknown}; known: {list(OPERATIONS)}")

class EvolConfig(Section):
    rounds: int = Field(4, ge=1, le=100, description="evolution rounds M; each round evolves every pool instruction once")
    operations: dict[str, float] = Field(
        default_factory=lambda: {op: 1.0 for op in OPERATIONS},
        description="weight per operation (0 disables it); the choice is uniform when all weights are equal")
    data_formats: list[str] = Field(default_factory=lambda: list(DEFAULT_DATA_FORMATS), min_length=1,
                                    description="formats complicate-input picks from (uniformly)")
    include_inputs: bool = Field(True, description="the output also holds the input rows (round 0), as the paper mixes all rounds")
    keep_parents_in_pool: bool = Field(
        False, description="after a successful evolution keep the parent in the pool too (the pool grows); "
                           "default: the child replaces it, as the paper's 52K x 4 rounds -> ~250K implies")
    temperature: float = Field(1.0, ge=0, le=2, description="sampling temperature for evolving and answering")
    top_p: float = Field(0.95, gt=0, le=1, description="nucleus sampling for evolving and answering (code 0.95, paper 0.9)")
    evolve_max_tokens: int = Field(512, gt=0, description="max tokens of an evolved instruction")
    answer_max_tokens: int = Field(2048, gt=0, description="max tokens of the teacher's answer (WizardLM's code: 2048), "
                                                        "lowered per request to what the teacher's context window leaves")
    logprobs: int | None = Field(None, ge=1, le=20, description="keep the top-K token logprobs of each answer "
                                 "(backends that return them) in meta.evol_instruct.logprobs, for export --with-logprobs")
    judge_max_tokens: int = Field(16, gt=0, description="max tokens of the equality judge's reply")
    judge_temperature: float = Field(0.0, ge=0, le=2, description="temperature of the equality judge (0: a decision, not a sample)")
    judge_unclear: Literal["keep", "drop"] = Field(
        "keep", description="what to do when the judge says neither Equal nor Not Equal (drop reason judge_unclear)")
    system: str | None = Field(None, description="system message sent with every teacher call and stored with the row")
    meta_terms: list[str] = Field(default_factory=lambda: list(DEFAULT_META_TERMS),
                                  description="terms of the evolving prompt an evolution must not copy (case-insensitive)")
    sorry_max_words: int = Field(80, ge=0, description="an answer with 'sorry' under this many words fails (rule b)")
    apology_terms: list[str] = Field(default_factory=lambda: ["sorry", "apolog"],
                                     description="instructions containing these are about apologies: rule b is skipped")
    retry_truncated: bool = Field(True, description="ask a cut-off answer once more with a larger budget before any drop "
                                                    "(ours: the paper does not retry)")
    retry_truncated_max_tokens: int | None = Field(None, gt=0, description="the retry's budget; default 2 x answer_max_tokens; "
                                                                         "either way capped by the teacher's context window")
    drop_truncated_answers: bool = Field(True, description="drop answers still cut off after the retry")
    max_length_ratio: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_LENGTH_RATIO),
                                               description="per operation: evolution words <= ratio x parent words + slack")
    length_slack_words: int = Field(40, ge=0, description="words allowed on top of the ratio (short parents)")
    max_rows: int | None = Field(None, gt=0, description="stop after this many accepted evolutions (all rounds); "
                                               "the extra ones of the last shard go to rejected/ as over_max_rows")
    max_tokens_total: int | None = Field(None, gt=0, description="stop once the teacher has spent this many tokens (prompt + completion); "
                                                          "checked between shards, so the shard in flight may overshoot")

    @field_validator("operations")
    @classmethod
    def _ops(cls, v: dict[str, float]) -> dict[str, float]:
        _known_operations(v)
        if any(w < 0 for w in v.values()):
            raise ValueError("operation weights must be >= 0")
        full = {op: float(v.get(op, 0.0)) for op in OPERATIONS}
        if not any(full.values()):
            raise ValueError("at least one operation needs a weight > 0")
        return full

    @model_validator(mode="after")
    def _retry_is_larger(self) -> "EvolConfig":
        if self.retry_truncated_max_tokens is not None and self.retry_truncated_max_tokens <= self.answer_max_tokens:
            raise ValueError(f"retry_truncated_max_tokens ({self.retry_truncated_max_tokens}) must be larger "
                             f"than answer_max_tokens ({self.answer_max_tokens})")
        return self

    @field_validator("max_length_ratio")
    @classmethod
    def _ratios(cls, v: dict[str, float]) -> dict[str, float]:
        _known_operations(v)
        if any(r <= 0 for r in v.values()):
            raise ValueError("length ratios must be > 0")
        return {**DEFAULT_LENGTH_RATIO, **v}

    @field_validator("meta_terms", "apology_terms")
    @classmethod
    def _lower(cls, v: list[str]) -> list[str]:
        return [t.lower() for t in v if t.strip()]

    @property
    def enabled(self) -> list[str]:
        return [op for op in OPERATIONS if self.operations[op] > 0]

    def settings(self) -> dict:
        """What decides the rows (recorded in plans; a resume with other values is refused).

        Budgets and the number of rounds are left out on purpose: raising them
        and rerunning continues the same run instead of being refused.
        """
        return self.model_dump(exclude={"max_rows", "max_tokens_total", "rounds"})
