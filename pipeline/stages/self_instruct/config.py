"""The `[self_instruct]` config section: paper defaults (METHODS.md section 1), all overridable.

Nested tables hold the sampling of each teacher call:
`[self_instruct.bootstrap]`, `[self_instruct.classify]`, `[self_instruct.instances]`,
`[self_instruct.alpaca]`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ...config import Section
from ...teacher.base import Sampling

# Paper keyword blacklist (whole words, case-insensitive); Alpaca adds five more.
PAPER_BLACKLIST = ["image", "images", "graph", "graphs", "picture", "pictures", "file", "files",
                   "map", "maps", "draw", "plot", "go to"]
ALPACA_EXTRA_BLACKLIST = ["video", "audio", "music", "flowchart", "diagram"]


class SamplingConfig(Section):
    temperature: float = Field(0.7, ge=0, le=2, description="sampling temperature")
    top_p: float = Field(1.0, ge=0, le=1, description="nucleus sampling mass")
    max_tokens: int = Field(512, gt=0, description="completion budget per request")
    presence_penalty: float = Field(0.0, ge=-2, le=2, description="sent where the backend supports it")
    frequency_penalty: float = Field(0.0, ge=-2, le=2, description="sent where the backend supports it")

    def sampling(self, stop: tuple[str, ...] = (), max_tokens: int | None = None) -> Sampling:
        return Sampling(temperature=self.temperature, top_p=self.top_p,
                        max_tokens=max_tokens or self.max_tokens,
                        presence_penalty=self.presence_penalty,
                        frequency_penalty=self.frequency_penalty, stop=tuple(stop))


class InstancesConfig(SamplingConfig):
    temperature: float = 0.0
    top_p: float = 0.0
    max_tokens: int = Field(350, gt=0, description="for ordinary (input-first) tasks")
    max_tokens_classification: int = Field(300, gt=0, description="for classification (output-first) tasks")
    presence_penalty: float = 1.5
    max_instances: int = Field(5, gt=0, description="instances kept per task (random sample when more)")


class AlpacaConfig(SamplingConfig):
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 3072
    num_seed_examples: int = Field(3, gt=0, description="seed tasks shown in each prompt")
    num_tasks: int = Field(20, gt=1, description="the list the teacher is asked to complete; stop before this item")


class SelfInstructConfig(Section):
    mode: Literal["self_instruct", "alpaca"] = Field(
        "self_instruct", description="self_instruct: the paper's bootstrap loop; alpaca: one call yields whole tasks")
    seeds: str | None = Field(None, description="seed file or dataset folder; default: the team's data/seed_tasks.jsonl")
    num_instructions: int = Field(20, gt=0, description="target size of the machine-generated pool")
    schedule: Literal["window", "paper"] = Field(
        "window", description="window: `window` requests in flight, bootstrap prompts built from pool snapshots, replies "
                              "filtered in request order, classification and instances in the same window; paper: "
                              "batches of request_batch_size, each waiting for all its replies (docs/DEPARTURES.md)")
    window: int | None = Field(None, gt=0, description="schedule = window: requests in flight; default: the teacher's "
                                                       "concurrency (with the seed it fixes the accepted set, reply timing never does)")
    request_batch_size: int = Field(5, gt=0, description="schedule = paper: bootstrap prompts sent together (built from one pool state)")
    num_prompt_instructions: int = Field(8, gt=1, description="in-context instructions per bootstrap prompt")
    num_machine_instructions: int = Field(2, ge=0, description="of which machine-generated, when available")
    last_item: int = Field(15, description="the teacher stops before item last_item + 1")
    capitalize: Literal["paper", "first_letter", "none"] = Field(
        "first_letter", description="first_letter: upper-case the first letter only (acronyms and code survive); "
                                    "paper: str.capitalize() as the original code (lowercases the rest)")
    min_words: int = Field(3, ge=0, description="drop instructions with this many words or fewer")
    max_words: int = Field(150, gt=0, description="drop instructions with more words than this")
    blacklist: list[str] | None = Field(None, description="whole-word keywords to drop; default: the paper's (plus Alpaca's in alpaca mode)")
    rouge_threshold: float = Field(0.7, gt=0, le=1, description="reject when ROUGE-L F1 with any pool instruction is above this")
    similar_top_k: int = Field(10, ge=0, description="most similar pool instructions stored per accepted one (0: skip)")
    truncated: Literal["discard", "drop_last"] | None = Field(
        None, description="a response cut by max_tokens: discard it (self_instruct default) or drop its last item (alpaca default)")
    stop_at_blank_line: bool = Field(
        True, description='self_instruct mode: also stop at a blank line (the paper\'s "\\n\\n"); off for a teacher that double-spaces lists')
    bootstrap: SamplingConfig = Field(description="sampling of the bootstrap (new instructions) requests; paper: temperature 0.7, top_p 0.5, presence penalty 2, max_tokens 1024", default_factory=lambda: SamplingConfig(
        temperature=0.7, top_p=0.5, max_tokens=1024, presence_penalty=2.0))
    classify: SamplingConfig = Field(description="sampling of the is-it-classification question (greedy, a Yes/No)",
                                     default_factory=lambda: SamplingConfig(temperature=0.0, top_p=0.0, max_tokens=3))
    logprobs: int | None = Field(None, ge=1, le=20, description="self_instruct mode: keep the top-K token logprobs "
                                 "of each instance's output (backends that return them) in meta.self_instruct.logprobs, "
                                 "for export --with-logprobs")
    instances: InstancesConfig = Field(description="sampling of instance generation (input-first or output-first)",
                                       default_factory=InstancesConfig)
    alpaca: AlpacaConfig = Field(description="alpaca mode: sampling and list size of the one-call task generation",
                                 default_factory=AlpacaConfig)
    max_requests: int | None = Field(None, gt=0, description="no new bootstrap batch once the stage made this many teacher requests")
    max_tokens_total: int | None = Field(None, gt=0, description="no new bootstrap batch once this many tokens were used")
    patience: int = Field(50, gt=0, description="stop after this many bootstrap requests in a row accept nothing")
    shard_tasks: int = Field(200, gt=0, description="accepted tasks per output shard (the unit of restart)")
    include_seeds: bool = Field(False, description="also write the seed tasks (origin 'seed') to the output")

    @model_validator(mode="after")
    def _check(self) -> "SelfInstructConfig":
        if self.num_machine_instructions >= self.num_prompt_instructions:
            raise ValueError("num_machine_instructions must be smaller than num_prompt_instructions")
        if self.last_item <= self.num_prompt_instructions:
            raise ValueError("last_item must be above num_prompt_instructions")
        if self.min_words >= self.max_words:
            raise ValueError("min_words must be below max_words")
        if self.logprobs is not None and self.mode == "alpaca":
            raise ValueError("logprobs is kept for instance generation (mode self_instruct); alpaca mode has none")
        if self.alpaca.num_tasks <= self.alpaca.num_seed_examples:
            raise ValueError("alpaca.num_tasks must be above alpaca.num_seed_examples")
        return self

    @property
    def keywords(self) -> list[str]:
        if self.blacklist is not None:
            return list(self.blacklist)
        return PAPER_BLACKLIST + (ALPACA_EXTRA_BLACKLIST if self.mode == "alpaca" else [])

    @property
    def on_truncation(self) -> str:
        return self.truncated or ("drop_last" if self.mode == "alpaca" else "discard")

    def replay_settings(self) -> dict[str, Any]:
        """Settings that shape every batch: a resume must use the same (target and budgets may change)."""
        d = self.model_dump()
        for k in ("num_instructions", "max_requests", "max_tokens_total", "patience", "seeds"):
            d.pop(k)
        return d
