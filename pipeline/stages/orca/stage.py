"""Orca stage: answer every instruction with the teacher under a chosen system
message (Orca 1) or strategy instruction (Orca 2), and build the SFT
`messages` for each row.

Reads: any dataset folder (instruction, input; a declared task_kind is kept).
Writes: one row per input row, same `id`, `parent_id`, `root_id` and `round`
(an Orca answer to the same instruction is the same task, so it keeps its
content id and lineage; the input's origin is kept in meta.orca.input_origin),
with origin "orca", `output` (the teacher's trace), `system` (the generation-
time system message or strategy text; "" for the empty message), `strategy`
("sysmsg:<id>" or the strategy name), `task_kind`, `messages` and teacher provenance.
`messages` is system + user + answer. Orca 1 trains on that triple with the
generation-time system message kept (none for the empty message). Orca 2
erases it (prompt erasure: the generic system message instead), which the
student can learn only because its strategy is a function of the task kind.
`[orca] erase_system` chooses (auto: erase in Orca 2 mode only); the manifest
records what was done under `system_message_erasure`. Failed,
empty, cut-off and refused answers go to rejected/ with a reason.

All of a shard's answers go to the teacher in one `chat` call (plus one for
task kinds when the teacher detects them, and one for cut-off retries).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...context import RunContext
from ...errors import ConfigError
from ...harmful import harmful_request
from ...prompts import load_template
from ...records import build_messages, make_id, now_utc, rejected_row, set_meta
from ...runner import ShardResult, run_shards
from ...seeding import rng_for
from ...store import Dataset
from ...teacher.base import ChatRequest, Completion, Sampling, unanswered_reasons
from ...teacher.truncation_retry import context_window, fit_budget, retry_truncated
from .answers import check_answer, compact_logprobs, refusal_phrase
from .catalog import (
    check_strategy_map,
    generic_system_message,
    load_strategy_catalog,
    load_system_catalog,
    read_strategy_map,
)
from .config import OrcaConfig
from .task_kind import TASK_KINDS, parse_teacher_kind, row_kind

STAGE = "orca"
KIND_TEMPLATE = "orca/task_kind.txt"
# Columns that describe the previous output, not the Orca answer: cleared.
_STALE = ("flags", "quality", "accuracy", "score", "minhash_cluster", "semdedup_cluster",
          "finish_reason", "prompt_tokens", "completion_tokens")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def user_turn(row: dict[str, Any]) -> str:
    """The query as both the teacher and the student see it."""
    return build_messages(row.get("instruction") or "", row.get("input") or "")[0]["content"]


@dataclass(frozen=True)
class Choice:
    kind: str
    kind_source: str           # declared | rules | teacher | rules_fallback
    system_text: str           # sent to the teacher ("" = no system turn)
    label: str                 # the `strategy` column: "sysmsg:<id>" or a strategy name
    system_id: int | None      # Orca 1 message id
    template: str              # the `prompt_template` column: "<catalog>#<id or name>"


class OrcaStage:
    """The per-shard Orca stage (implements runner.ShardStage)."""

    name = STAGE

    def __init__(self, cfg: OrcaConfig | None = None):
        self.cfg = cfg = cfg or OrcaConfig()
        self.systems = load_system_catalog(cfg.system_messages, cfg.system_map or None)
        self.strategies = load_strategy_catalog(cfg.strategies_catalog)
        smap = dict(self.strategies.default)
        if cfg.strategy_map_file:
            smap.update(read_strategy_map(cfg.strategy_map_file, self.strategies))
        check_strategy_map("[orca] strategy_map", "strategy_map", cfg.strategy_map, self.strategies.texts)
        smap.update(cfg.strategy_map)
        self.strategy_map = smap
        self.generic = generic_system_message(cfg.generic_system)
        self.erase = cfg.erase_system == "always" or (cfg.erase_system == "auto" and cfg.strategies)
        secret = [t for t in list(self.systems.messages.values()) + list(self.strategies.texts.values()) if t]
        if self.erase and self.generic in secret:
            raise ConfigError("[orca] generic_system: must not be one of the generation-time system messages "
                              "or strategies (prompt erasure would erase nothing)")
        self.sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens,
                                 logprobs=cfg.logprobs)

    def settings(self) -> dict[str, Any]:
        s = self.cfg.model_dump()
        s.update(system_catalog_hash=self.systems.hash, strategies_hash=self.strategies.hash,
                 generic_system_hash=_sha(self.generic))
        if self.cfg.strategies:
            s["resolved_strategy_map"] = dict(sorted(self.strategy_map.items()))
        return s

    def erasure(self) -> dict[str, Any]:
        """What the manifest (and from it the dataset card) says about the training system turn."""
        info: dict[str, Any] = {"erased": self.erase, "option": self.cfg.erase_system,
                                "mode": "orca2" if self.cfg.strategies else "orca1"}
        if self.erase:
            info["generic_system"] = self.generic
        return info

    # -- choices ---------------------------------------------------------------
    def choose(self, row: dict[str, Any], kind: str, source: str, seed: int) -> Choice:
        """The system message or strategy for one row; seeded by (run seed, id, purpose)."""
        if self.cfg.strategies:
            name = self.strategy_map[kind]
            return Choice(kind, source, self.strategies.texts[name], name, None,
                          f"{self.strategies.label}#{name}")
        mid = rng_for(seed, row["id"], "orca:system").choice(self.systems.allowed[kind])
        return Choice(kind, source, self.systems.text(mid), f"sysmsg:{mid}", mid,
                      f"{self.systems.label}#{mid}")

    def detect_kinds(self, rows: list[dict[str, Any]], ctx: RunContext) -> tuple[list[tuple[str, str]], list[Completion | None]]:
        """(kind, source) per row, and the teacher's kind completions (None where not asked)."""
        kinds = [row_kind(r, self.cfg.trust_declared_kind) for r in rows]
        asked: list[Completion | None] = [None] * len(rows)
        if self.cfg.task_kind != "teacher":
            return kinds, asked
        idx = [i for i, (_, src) in enumerate(kinds) if src != "declared"]
        if not idx:
            return kinds, asked
        tpl = load_template(KIND_TEMPLATE)
        reqs = [ChatRequest(messages=[{"role": "user", "content": tpl.render(
                    kinds=", ".join(TASK_KINDS), task=user_turn(rows[i]))}],
                    sampling=Sampling(temperature=0.0, max_tokens=16), record_id=rows[i]["id"],
                    purpose="orca:task_kind") for i in idx]
        for i, c in zip(idx, ctx.teacher.chat(reqs)):
            asked[i] = c
            got = parse_teacher_kind(c.text) if c.ok else None
            kinds[i] = (got, "teacher") if got else (kinds[i][0], "rules_fallback")
        return kinds, asked

    # -- one shard -----------------------------------------------------------------
    def process(self, rows: list[dict[str, Any]], ctx: RunContext) -> ShardResult:
        rows = [dict(r, id=r.get("id") or make_id(r.get("instruction") or "", r.get("input") or "")) for r in rows]
        kinds, kind_comps = self.detect_kinds(rows, ctx)
        choices = [self.choose(r, k, src, ctx.seed) for r, (k, src) in zip(rows, kinds)]
        window = context_window(ctx)
        reqs = [fit_budget(self._request(r, ch, self.sampling), window) for r, ch in zip(rows, choices)]
        stats: Counter = Counter()
        reqs, attempts = retry_truncated(ctx.teacher.chat, window, reqs, ctx.teacher.chat(reqs),
                                         enabled=self.cfg.retry_truncated,
                                         max_tokens=self.cfg.retry_truncated_max_tokens, stats=stats)
        stats["orca_truncation_retries"] += stats["truncation_retried"]
        kept, rejected = [], []
        result = ShardResult(kept=kept, rejected=rejected)
        for row, choice, req, tries, kc in zip(rows, choices, reqs, attempts, kind_comps):
            if reasons := unanswered_reasons([*tries, kc]):  # the teacher's fault, not the row's: ask again
                result.leave_unanswered(reasons)
                continue
            final = tries[-1]
            out = self._output_row(row, choice, req, tries, kc, ctx)
            keep_refusal = harmful_request(row)  # a request that should be refused: its refusal is kept (LIMA)
            verdict = check_answer(final, truncated=self.cfg.truncated,
                                   drop_refusals=self.cfg.drop_refusals and keep_refusal is None)
            if verdict is None and keep_refusal is not None and refusal_phrase(out["output"] or ""):
                stats["refusal_kept"] += 1
            stats[f"task_kind.{choice.kind}"] += 1
            if verdict is None:
                out["messages"] = self.training_messages(row, out["output"], choice)
                kept.append(out)
                stats[f"strategy.{choice.label}"] += 1
                if out["reasoning"]:  # the manifest's totals: traces kept and their length in characters
                    stats["reasoning_rows"] += 1
                    stats["reasoning_chars"] += len(out["reasoning"])
            else:
                rejected.append(rejected_row(out, STAGE, *verdict))
        result.stats = dict(stats)
        return result

    def _request(self, row: dict[str, Any], choice: Choice, sampling: Sampling) -> ChatRequest:
        msgs = [{"role": "system", "content": choice.system_text}] if choice.system_text else []
        msgs.append({"role": "user", "content": user_turn(row)})
        return ChatRequest(messages=msgs, sampling=sampling, record_id=row["id"], purpose="orca:answer")

    def training_messages(self, row: dict[str, Any], output: str, choice: Choice) -> list[dict[str, str]]:
        """The generation-time system turn (Orca 1), or with prompt erasure the generic one (Orca 2)."""
        system = choice.system_text
        if self.erase:
            system = "" if choice.system_id == 1 and self.cfg.empty_system_turn == "omit" else self.generic
        return build_messages(row.get("instruction") or "", row.get("input") or "", output, system=system or None)

    def _output_row(self, row: dict[str, Any], choice: Choice, req: ChatRequest, tries: list[Completion],
                    kind_comp: Completion | None, ctx: RunContext) -> dict[str, Any]:
        final = tries[-1]
        spent = tries + ([kind_comp] if kind_comp is not None else [])
        out = dict(row)
        for col in _STALE:
            out[col] = None
        out.update(
            origin="orca", output=(final.text or "").strip(), reasoning=final.reasoning, messages=None,
            system=choice.system_text, strategy=choice.label, task_kind=choice.kind,
            teacher_backend=ctx.teacher.backend, teacher_model=final.model or ctx.teacher.model,
            sampling=req.sampling.to_json(), prompt_template=choice.template,
            prompt_hash=_sha(choice.system_text), finish_reason=final.finish_reason,
            prompt_tokens=sum(c.usage.prompt_tokens for c in spent),
            completion_tokens=sum(c.usage.completion_tokens for c in spent),
            run_id=ctx.run_id, created_at=now_utc(),
        )
        info: dict[str, Any] = {
            "mode": "strategies" if self.cfg.strategies else "system_messages",
            "system_id": choice.system_id,
            "system_erased": self.erase,
            "task_kind_source": choice.kind_source,
            "input_origin": row.get("origin"),
            "attempts": len(tries),
            "cached": all(c.cached for c in tries),
        }
        if row.get("task_kind") and row["task_kind"] != choice.kind:
            info["input_task_kind"] = row["task_kind"]  # e.g. Dolly's "general_qa", read as open_qa
        if len(tries) > 1:
            info["first_finish_reason"] = tries[0].finish_reason
        if self.cfg.logprobs:
            info["logprobs"] = compact_logprobs(final.logprobs, self.cfg.logprobs)
        set_meta(out, STAGE, info)
        return out


def run_orca(input: str | Path | Dataset, out: str | Path, ctx: RunContext, settings: OrcaConfig | None = None,
             *, shard_rows: int = 1000, limit: int | None = None, executor: str | None = None) -> dict[str, Any]:
    """Answer every row of `input` with the teacher; write the Orca dataset to `out`; return its manifest.

    `executor`: "local" or "ray" (default: `ctx.executor`, what --executor set)."""
    ds = input if isinstance(input, Dataset) else Dataset(input, require_complete=True)
    stage = OrcaStage(settings)
    prompts = {"system_messages": stage.systems.hash, "strategies": stage.strategies.hash,
               "generic_system": _sha(stage.generic)}
    if stage.cfg.task_kind == "teacher":
        prompts[KIND_TEMPLATE] = load_template(KIND_TEMPLATE).hash
    return run_shards(stage, ds, out, ctx, shard_rows=shard_rows, limit=limit, executor=executor,
                      manifest_extra={"prompt_hashes": prompts, "generic_system": stage.generic,
                                      "system_message_erasure": stage.erasure()})
