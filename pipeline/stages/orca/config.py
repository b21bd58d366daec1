"""The `[orca]` config section: how the Orca stage picks system messages or
strategies, builds the training messages (erased in Orca 2 mode), samples the teacher and
filters its answers. Validated by `pipeline.config.stage_config`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ...config import Section


class OrcaConfig(Section):
    # -- what the teacher is told --------------------------------------------
    strategies: bool = Field(False, description="Orca 2 mode: answer under a per-kind strategy instruction instead of an Orca system message")
    system_messages: str = Field("orca/system_messages.toml", description="system-message catalog: a name under prompts/ or a file path")
    strategies_catalog: str = Field("orca/strategies.toml", description="strategy catalog: a name under prompts/ or a file path")
    system_map: dict[str, list[int]] = Field(default_factory=dict, description="task kind -> allowed system-message ids (overrides the catalog's [allowed] per kind)")
    strategy_map: dict[str, str] = Field(default_factory=dict, description="task kind -> strategy name (overrides the catalog's [default] and strategy_map_file per kind)")
    strategy_map_file: str | None = Field(None, description="TOML file written by `distill orca calibrate` ([strategy_map] table)")
    # -- task kind ------------------------------------------------------------
    task_kind: Literal["rules", "teacher"] = Field("rules", description="how to detect a row's task kind: rules, or ask the teacher (rules as fallback)")
    trust_declared_kind: bool = Field(True, description="keep a known task_kind already on the row instead of detecting one")
    # -- prompt erasure -------------------------------------------------------
    erase_system: Literal["auto", "always", "never"] = Field("auto", description="prompt erasure: replace the generation-time system message in `messages` with generic_system; auto = in Orca 2 mode only (Orca 1 keeps its system message)")
    generic_system: str | None = Field(None, description="system turn of the training messages when erasing; default: prompts/orca/generic_system.txt; '' = no system turn")
    empty_system_turn: Literal["generic", "omit"] = Field("generic", description="when erasing, rows generated with the empty system message (id 1): give them the generic system turn too, or none")
    # -- sampling -------------------------------------------------------------
    temperature: float = Field(0.7, ge=0, le=2, description="sampling temperature of the answers")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass of the answers")
    max_tokens: int = Field(2048, gt=0, description="completion budget per answer (2048, Orca 1's training sequence length), lowered per request to what the teacher's context window leaves after the prompt")
    logprobs: int | None = Field(None, ge=1, le=20, description="keep the top-K token logprobs (backends that return them) in meta.orca.logprobs")
    # -- answer filters -------------------------------------------------------
    truncated: Literal["drop", "keep"] = Field("drop", description="answers cut off by the token budget: drop (reason 'truncated') or keep")
    retry_truncated: bool = Field(True, description="ask a cut-off answer once more with a larger budget before applying `truncated` (ours: the papers do not retry)")
    retry_truncated_max_tokens: int | None = Field(None, gt=0, description="the retry's budget; default 2 x max_tokens; either way capped by the teacher's context window")
    drop_refusals: bool = Field(True, description="drop answers that open with a refusal (reason 'refusal')")

    @model_validator(mode="after")
    def _retry_is_larger(self) -> "OrcaConfig":
        if self.retry_truncated_max_tokens is not None and self.retry_truncated_max_tokens <= self.max_tokens:
            raise ValueError(f"retry_truncated_max_tokens ({self.retry_truncated_max_tokens}) must be larger "
                             f"than max_tokens ({self.max_tokens})")
        return self
