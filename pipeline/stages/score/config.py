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

Who scores (`judge`, resolved once per run by `judge_mode`; the manifest,
every row's meta and the dataset card name the result as `score_source`):

- "deita": Deita's trained scorers (hkust-nlp/deita-complexity-scorer,
  deita-quality-scorer) through a text-completions endpoint, in their own
  prompt format, as the expected value over the "1".."6" tokens (deita.py).
- "rubric": a zero-shot rubric prompt to a general model (the "direct
  scoring" baseline Deita compares against); the fallback for judges that
  are not Deita's scorers.
- "heuristic": no teacher: answer length x prompt length x answer relevance
  (combine.py). Ranks; is not a quality score. Only for the embedded demo
  teacher (SmolLM2-135M cannot rate).
- "auto" (default): "deita" when [score.judge_teacher] (or a
  [score.judge_overrides.<score>]) names a Deita scorer model, "rubric" with any
  other judge teacher or a network/vLLM run teacher, "heuristic" with the
  embedded (llamacpp) run teacher or none. "teacher" and "none" are the older
  names of "rubric" and "heuristic".
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ...config import Section, TeacherSection

# Gate names in the order they are checked; a dropped row's drop_reason comes
# from the first failing gate (the detail lists any others that also failed).
GATES = ("empty", "echo", "refusal", "ai_disclaimer", "truncated", "language_switch", "code_fence",
         "unseen_attachment", "other_answer_reference", "first_person_anecdote", "url_html", "length")

JUDGES = ("quality", "complexity", "accuracy")
JUDGE_MODES = ("auto", "deita", "rubric", "heuristic", "teacher", "none")
OLD_NAMES = {"teacher": "rubric", "none": "heuristic"}
DEITA_SCORES = ("quality", "complexity")  # Deita trained a scorer for each; accuracy is AlpaGasus's rubric

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

    judge: Literal["auto", "deita", "rubric", "heuristic", "teacher", "none"] = Field(
        "auto", description="'deita': Deita's trained scorers (a completions endpoint); 'rubric': a zero-shot rubric to a "
                            "general judge; 'heuristic': length x relevance, not a quality score; 'auto': deita when the "
                            "judge teacher is a Deita scorer, rubric with any other capable teacher, heuristic with the "
                            "embedded one ('teacher'/'none': older names of rubric/heuristic)")
    judge_teacher: TeacherSection | None = Field(
        None, description="a separate [score.judge_teacher] for judging (recommended: not the model that wrote the data); "
                          "default: the run's [teacher]")
    judge_overrides: dict[Literal["quality", "complexity", "accuracy"], dict[str, Any]] = Field(
        default_factory=dict, description="[score.judge_overrides.<score>]: fields of judge_teacher that differ for one "
                                          "score, e.g. complexity's model and base_url (Deita's two scorers are two models)")
    heuristic: Literal["length*relevance", "length"] = Field(
        "length*relevance", description="judge-less score: answer x prompt length ramps, times the answer's relevance "
                                        "(MiniLM cosine of request and answer), or the length ramps alone")
    relevance_model: str = Field("minilm", description="sentence-transformers model of the heuristic's relevance "
                                                      "('minilm': the bundled all-MiniLM-L6-v2)")
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

    @field_validator("judge")
    @classmethod
    def _new_names(cls, v: str) -> str:
        return OLD_NAMES.get(v, v)

    @model_validator(mode="after")
    def _judges_cover_combine(self) -> "ScoreConfig":
        if self.judge != "heuristic":
            missing = [j for j in COMBINE[self.combine] if j not in self.judges]
            if missing:
                raise ValueError(f"combine = '{self.combine}' needs judges {missing}; add them to judges")
        if self.judge == "deita" and (other := [j for j in self.judges if j not in DEITA_SCORES]):
            raise ValueError(f"judge = 'deita' has scorers for {list(DEITA_SCORES)} only, not {other}; "
                             "remove them from judges or use judge = 'rubric'")
        if self.judge_overrides and self.judge_teacher is None:
            raise ValueError("judge_overrides change fields of [score.judge_teacher]; add that section first")
        for j in self.judges:
            sec = self.teacher_for(j)  # a bad override is a config error now, not at the first shard
            other = next((o for o in DEITA_SCORES if o != j), "")
            if (self.judge in ("auto", "deita") and sec is not None and is_deita_scorer(sec.model)
                    and other in sec.model.lower() and j not in sec.model.lower()):
                raise ValueError(f"{j} would be scored by {sec.model}, Deita's {other} scorer; set "
                                 f"[score.judge_overrides.{j}] model = 'hkust-nlp/deita-{j}-scorer' (and its base_url)")
        return self

    def teacher_for(self, judge: str) -> TeacherSection | None:
        """The teacher section that gives score `judge`: judge_teacher with its overrides, or None (the run's)."""
        if self.judge_teacher is None:
            return None
        over = self.judge_overrides.get(judge)
        return TeacherSection.model_validate({**self.judge_teacher.model_dump(), **over}) if over else self.judge_teacher

    def deita_scorers(self) -> bool:
        """Whether the judge teacher of any score names a Deita scorer model (what judge = 'auto' looks at)."""
        return any(is_deita_scorer(sec.model) for j in self.judges if (sec := self.teacher_for(j)) is not None)

    def bounds_for(self, task_kind: str | None) -> tuple[tuple[int, int], str]:
        """([min, max] characters, which rule gave them) for a row's task kind."""
        kind = normalize_kind(task_kind)
        if kind and kind in self.length_bounds:
            return self.length_bounds[kind], f"length_bounds[{kind}]"
        if kind and kind in {normalize_kind(k) for k in self.long_form_kinds}:
            return self.long_form_chars, "long_form"
        return self.default_chars, "default"


def is_deita_scorer(model: str | None) -> bool:
    """A Deita scorer by its name: hkust-nlp/deita-quality-scorer, a local folder deita-complexity-scorer, ..."""
    name = (model or "").lower()
    return "deita" in name and "scorer" in name


def judge_mode(cfg: ScoreConfig, run_backend: str | None) -> str:
    """'deita', 'rubric' or 'heuristic' for `cfg.judge`; `run_backend`: the run teacher's backend (None: no teacher)."""
    if cfg.judge != "auto":
        return cfg.judge
    if cfg.judge_teacher is not None:
        return "deita" if cfg.deita_scorers() else "rubric"
    return "heuristic" if run_backend in (None, "llamacpp") else "rubric"


def normalize_kind(kind: str | None) -> str:
    return "_".join((kind or "").strip().lower().replace("-", " ").split())
