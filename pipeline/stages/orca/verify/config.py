"""The `[verify]` config section: how many answers are sampled per row, where the reference is, how the
vote decides and which traces are kept. Validated by `pipeline.config.stage_config`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ....config import Section
from .extract import MAX_TEXT_WORDS


class VerifyConfig(Section):
    samples: int = Field(4, ge=1, le=64, description="answers sampled per row (self-consistency's n), each with its own seed")
    temperature: float = Field(0.7, ge=0, le=2, description="sampling temperature of the answers (above 0, or the n samples are one)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass of the answers")
    max_tokens: int = Field(512, gt=0, description="completion budget per answer")
    reference: Literal["output", "none"] = Field("output", description="where a row's reference answer is: its `output` column (a labelled dataset), or none (the majority decides for every row); a row with an empty output is voted on")
    majority: float = Field(0.5, ge=0, lt=1, description="without a reference: the most common answer is the target when more than this share of the samples that state an answer give it (no tie)")
    max_text_words: int = Field(MAX_TEXT_WORDS, ge=1, description="a reference of more words than this (and no number or option letter) cannot be checked: the row is dropped as not_checkable")
    keep: Literal["all", "first"] = Field("all", description="agreeing traces kept per row: all (rejection sampling), or the first by sample index (one per row)")
    truncated: Literal["drop", "keep"] = Field("drop", description="answers cut off by the token budget: drop (reason 'truncated') or vote on them")
    drop_refusals: bool = Field(True, description="drop answers that open with a refusal (reason 'refusal')")
