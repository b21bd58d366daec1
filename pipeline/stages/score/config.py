"""The `[score]` config section: hygiene gates, length bounds, judge, combined score, decontamination.

Defaults follow METHODS.md section 4 (LIMA rules as gates, Deita 1-6 scores
combined as quality x complexity, AlpaGasus 0-5 accuracy as the alternative).

Length bounds: every row gets `default_chars` = [1, 8192]: non-empty and not
a runaway generation. LIMA's window is opt-in: LIMA (Zhou et al., 2023,
section 2.1) kept Stack Exchange answers of 1,200-4,096 characters, a choice
for one web source, not a rule about good answers; as a default it dropped
1,348 of Dolly's 2,996 human-written rows (every short open_qa and general_qa
answer). List kinds in `long_form_kinds` (e.g. ["open_qa", "general_qa"]) to
apply `long_form_chars` to them. `length_bounds` sets a band per kind and
wins over both.

Judging is off by default (`judge = "none"`): the embedded SmolLM2-135M cannot
judge, and judging costs one teacher request per score per row. With the judge
off the combined score is the documented length heuristic (see `combine.py`)
and every manifest and row says `score_source = "heuristic"`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ...config import Section, TeacherSection

# Gate names in the order they are checked; a dropped row's drop_reason comes
# from the first failing gate (the detail lists any others that also failed).
GATES = ("empty", "echo", "refusal", "ai_disclaimer", "truncated", "language_switch", "code_fence",
         "unseen_attachment", "other_answer_reference", "first_person_anecdote", "url_html", "length")

JUDGES = ("quality", "complexity", "accuracy")

# combine -> the judge scores it needs.
COMBINE = {
    "quality*complexity": ("quality", "complexity"),   # Deita's EVOL score (default)
    "accuracy*complexity": ("accuracy", "complexity"),
    "quality": ("quality",),
    "complexity": ("complexity",),
    "accuracy": ("accuracy",),                         # AlpaGasus
}


class ScoreConfig(Section):
    gates: list[str] = Field(default_factory=lambda: list(GATES),
                             description=f"hygiene gates to apply, any of {list(GATES)}")
    long_form_kinds: list[str] = Field(default_factory=list,
                                       description="opt-in LIMA window: task kinds whose answers must fit long_form_chars "
                                                   "(LIMA used it on Stack Exchange; e.g. [\"open_qa\", \"general_qa\"])")
    long_form_chars: tuple[int, int] = Field((1200, 4096), description="[min, max] answer characters for long_form_kinds "
                                                                        "(LIMA section 2.1)")
    default_chars: tuple[int, int] = Field((1, 8192), description="[min, max] answer characters for every other row (task_kind null included)")
    length_bounds: dict[str, tuple[int, int]] = Field(default_factory=dict,
                                                      description="per task kind [min, max] characters; wins over the two above")
    default_language: str = Field("en", description="language assumed for a Latin-script prompt too short to detect")

    judge: Literal["none", "teacher"] = Field(
        "none", description="'teacher': ask the (judge) teacher for scores; 'none': documented length heuristic")
    judge_teacher: TeacherSection | None = Field(
        None, description="a separate [score.judge_teacher] for judging; default: the run's [teacher]")
    judges: list[Literal["quality", "complexity", "accuracy"]] = Field(
        default_factory=lambda: ["quality", "complexity"],
        description="scores to ask for: quality 1-6, complexity 1-6 (Deita), accuracy 0-5 (AlpaGasus)")
    combine: Literal["quality*complexity", "accuracy*complexity", "quality", "complexity", "accuracy"] = Field(
        "quality*complexity", description="combined score used for selection (Deita: quality x complexity)")
    judge_logprobs: int = Field(20, ge=0, le=20,
                                description="top-k logprobs to ask for (expected value over score tokens); 0: parse the text only")
    judge_max_tokens: int = Field(8, gt=0, le=256, description="max tokens of a judgment (the prompt asks for one digit)")
    judge_temperature: float = Field(0.0, ge=0, le=2, description="judge temperature (0: a rating, not a sample)")
    judge_max_chars: int = Field(6000, gt=0, description="request/answer text shown to the judge is cut to this many characters each")

    decontaminate: list[str] = Field(default_factory=list,
                                     description="evaluation files (JSON/JSONL/Parquet/text): drop rows sharing an n-gram with them")
    decontam_n: int = Field(13, ge=3, le=50, description="n-gram length in words: 13 (lm-eval, NeMo) or 8 (Tulu 3)")
    decontam_min_tokens: int = Field(8, ge=3, description="evaluation texts shorter than n but at least this long match as a whole")
    decontam_fields: list[Literal["instruction", "input", "output"]] = Field(
        default_factory=lambda: ["instruction", "input", "output"], description="row fields checked for overlap")

    @field_validator("gates")
    @classmethod
    def _gates(cls, v: list[str]) -> list[str]:
        unknown = sorted(set(v) - set(GATES))
        if unknown:
            raise ValueError(f"unknown gates {unknown}; known: {list(GATES)}")
        return [g for g in GATES if g in v]  # always checked in the documented order

    @field_validator("long_form_chars", "default_chars")
    @classmethod
    def _band(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] < 0 or v[1] < v[0]:
            raise ValueError(f"need 0 <= min <= max, got {list(v)}")
        return v

    @field_validator("length_bounds")
    @classmethod
    def _bands(cls, v: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        for kind, band in v.items():
            if band[0] < 0 or band[1] < band[0]:
                raise ValueError(f"{kind}: need 0 <= min <= max, got {list(band)}")
        return {normalize_kind(k): b for k, b in v.items()}

    @model_validator(mode="after")
    def _judges_cover_combine(self) -> "ScoreConfig":
        if self.judge == "teacher":
            missing = [j for j in COMBINE[self.combine] if j not in self.judges]
            if missing:
                raise ValueError(f"combine = '{self.combine}' needs judges {missing}; add them to judges")
        return self

    def bounds_for(self, task_kind: str | None) -> tuple[tuple[int, int], str]:
        """([min, max] characters, which rule gave them) for a row's task kind."""
        kind = normalize_kind(task_kind)
        if kind and kind in self.length_bounds:
            return self.length_bounds[kind], f"length_bounds[{kind}]"
        if kind and kind in {normalize_kind(k) for k in self.long_form_kinds}:
            return self.long_form_chars, "long_form"
        return self.default_chars, "default"


def normalize_kind(kind: str | None) -> str:
    return "_".join((kind or "").strip().lower().replace("-", " ").split())
