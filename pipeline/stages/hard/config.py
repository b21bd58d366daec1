"""The `[hard]` config section: the student, the referee, the hard threshold, the generation of new
instructions, and the rounds. Validated by `pipeline.config.stage_config`.

Defaults follow Lion (Jiang et al., 2023; its released code): the referee scores both answers 1-10 at
temperature 0.2 with up to 512 tokens, a row is hard when the teacher's mean score beats the student's
by at least 1, and the generator writes as many new easy instructions as new hard ones (3,000 of each per
iteration in the paper's runs), sampled at temperature 1 and top-p 1, kept when their ROUGE-L against
the pool is at most 0.7.

The referee reads its two scores per order in one of two ways (`referee`): "text", Lion's way, a generated
review whose closing lines give both scores (referee.py); "logprobs", each score as the expected value over
the score tokens of a text completion that ends right before the number (logprob_referee.py). "auto" (the
default) is "logprobs" for the embedded model (backend "llamacpp", or a server that names its model
"smollm2-135m-instruct", as the embedded server does) and "text" for every other judge: a 135M model cannot
write the review's format, while a capable judge's reasoning before its scores is what Lion asks for, and a
batch API (chat only) or OpenAI's /v1/completions (at most 5 logprobs) suits the text review.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ...config import Section, TeacherSection
from ...teacher.server import MODEL_ALIAS


class HardConfig(Section):
    enabled: bool = Field(False, description="run this stage in `distill run` (between evol_instruct and orca); "
                                             "`distill hard` always runs it")
    student: TeacherSection | None = Field(
        None, description="[hard.student], configured like [teacher]: any OpenAI-compatible or vLLM model (your "
                          "checkpoint); unset: the embedded SmolLM2-135M (a [teacher] section's defaults)")
    judge_teacher: TeacherSection | None = Field(
        None, description="the referee; default: [score.judge_teacher] when set, else the run's [teacher]")
    threshold: float = Field(1.0, ge=0, le=9, description="a row is hard when teacher score - student score "
                                                          "(1-10 scale, mean of both orders) >= this (Lion: 1)")
    rounds: int = Field(1, ge=1, le=10, description="discrimination + generation rounds against the same student")
    per_hard: int = Field(1, ge=0, le=10, description="new instructions asked per hard row in a round")
    easy_ratio: float = Field(1.0, ge=0, le=10, description="new easy instructions per new hard one (Lion: 1)")
    max_similarity: float = Field(0.7, gt=0, le=1, description="drop a new instruction whose ROUGE-L F against an "
                                                               "instruction of the shard is above this (Lion: 0.7)")
    student_temperature: float = Field(0.7, ge=0, le=2, description="sampling temperature of the student's answers")
    answer_max_tokens: int = Field(512, gt=0, description="completion budget of the student's (and, after round 1, "
                                                          "the teacher's) answers")
    referee: Literal["auto", "text", "logprobs"] = Field(
        "auto", description="'text': a generated review parsed for two scores (Lion); 'logprobs': each score the "
                            "expected value over the 1-10 tokens of a text completion (/v1/completions); 'auto': "
                            "logprobs for the embedded model, text for any other judge")
    referee_logprobs: int = Field(20, ge=1, le=20, description="top-k logprobs a logprobs referee asks for")
    referee_temperature: float = Field(0.2, ge=0, le=2, description="sampling temperature of the referee (Lion: 0.2)")
    referee_max_tokens: int = Field(512, gt=0, description="completion budget of one referee review (Lion: 512)")
    generate_temperature: float = Field(1.0, ge=0, le=2, description="sampling temperature of new instructions "
                                                                    "(Lion: 1.0)")
    generate_max_words_factor: int = Field(4, gt=0, description="token budget of a new instruction: this x the "
                                                                "words of its parent (Lion: 4), at least 64")

    def student_section(self) -> TeacherSection:
        """The student's [teacher]-like section (the embedded default when unset)."""
        return self.student if self.student is not None else TeacherSection()


def referee_mode(setting: str, judge: Any) -> str:
    """'text' or 'logprobs' for `[hard] referee` and the judge teacher (its backend and model): see the docstring."""
    if setting != "auto":
        return setting
    embedded = getattr(judge, "backend", None) == "llamacpp" or getattr(judge, "model", None) == MODEL_ALIAS
    return "logprobs" if embedded else "text"
