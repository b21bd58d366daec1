"""One round over one shard of the pool: evolve, judge, answer, eliminate.

Reads a list of pool rows; returns the accepted evolutions (new rows pointing
at their parents), the failed ones (rows for `rejected/`, lineage kept), and
the shard of next round's pool. The teacher is asked three times per shard,
each time with the whole shard's requests in one `chat()` call so a
concurrent backend keeps its requests in flight:

  1. evolve every pool row with its chosen operation;
  2. judge every surviving evolution against its parent (Equal / Not Equal);
  3. answer the evolutions the judge let through (the answer is the row's output), and ask a
     cut-off answer once more with a larger budget (teacher/truncation_retry.py).

Judging before answering means an evolution with no information gain costs no
answer: teacher calls per accepted evolution stay near the paper's three.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ... import logprobs, records
from ...context import RunContext
from ...errors import TeacherUnavailable
from ...records import Drop
from ...runner import ShardResult
from ...teacher.base import ChatRequest, Completion, Sampling, unanswered_reasons
from ...teacher.budget import Budget
from ...teacher.truncation_retry import context_window, fit_budget, retry_truncated
from .config import EvolConfig
from .eliminate import check_answer, check_evolution, check_judge
from .operations import Choice, Operations, parse_evolution, prompt_text, template_name

STAGE = "evol_instruct"


@dataclass
class ShardOutcome:
    kept: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    pool: list[dict[str, Any]]
    stats: dict[str, float] = field(default_factory=dict)
    unanswered: list[dict[str, int]] = field(default_factory=list)  # per unanswered parent: error kind -> n


@dataclass
class _Cand:
    parent: dict[str, Any]
    choice: Choice
    parent_prompt: str
    evolved: str
    evolve: Completion
    judge: Completion | None = None
    verdict: str | None = None
    answer: Completion | None = None
    answer_tries: list[Completion] = field(default_factory=list)  # the first answer, then the retry if any
    answer_sampling: Sampling | None = None  # as finally sent (the retry's larger budget)
    drop: Drop | None = None
    unanswered: dict[str, int] | None = None  # a step failed for an outside reason: no verdict, asked again

    def ask(self, comp: Completion) -> bool:
        """False (and the candidate left unanswered) when `comp` failed for a reason outside the row."""
        if comp.unanswered:
            self.unanswered = unanswered_reasons([comp])
            self.drop = Drop("unanswered", "")  # out of the later steps; never written as a drop
        return self.unanswered is None


def next_pool(parents: list[dict[str, Any]], kept: list[dict[str, Any]],
              keep_parents: bool) -> list[dict[str, Any]]:
    """A shard of the next round's pool from this round's pool shard and its accepted evolutions
    (in shard order): each evolution takes its parent's place (beside it with keep_parents), a
    parent whose evolution failed stays. The same list `ShardEvolver.run` returns as `pool`."""
    order = pool_order([p["id"] for p in parents], [r.get("parent_id") for r in kept], keep_parents)
    return [kept[i] if from_kept else parents[i] for from_kept, i in order]


def pool_order(parent_ids: list[str], kept_parent_ids: list[str | None],
               keep_parents: bool) -> list[tuple[bool, int]]:
    """`next_pool` as (from kept?, index) pairs, so a caller holding Arrow tables can `take` them."""
    order: list[tuple[bool, int]] = []
    k = 0
    for i, pid in enumerate(parent_ids):
        if k < len(kept_parent_ids) and kept_parent_ids[k] == pid:
            order.append((True, k))
            if keep_parents:
                order.append((False, i))
            k += 1
        else:
            order.append((False, i))
    if k != len(kept_parent_ids):
        raise ValueError(f"{len(kept_parent_ids) - k} accepted evolutions have no parent in their pool shard, in order")
    return order


class RoundStage:
    """One round as a per-shard stage for `runner.run_shards`: `ShardEvolver.run` with the room
    `budget` has left (max_rows), its accepted and failed evolutions as the kept and rejected rows."""

    name = STAGE
    needs_teacher = True

    def __init__(self, evolver: "ShardEvolver", round_no: int, budget: Budget):
        self.evolver = evolver
        self.round_no = round_no
        self.budget = budget

    def settings(self) -> dict[str, Any]:
        return self.evolver.cfg.settings()

    def process(self, rows: list[dict[str, Any]], ctx: RunContext) -> ShardResult:
        res = self.evolver.run(rows, self.round_no, ctx, room=self.budget.rows_left())
        result = ShardResult(res.kept, res.rejected, res.stats)
        for reasons in res.unanswered:
            result.leave_unanswered(reasons)
        return result


class ShardEvolver:
    """Holds what every shard of a run shares: config, operations, sampling."""

    def __init__(self, cfg: EvolConfig, ops: Operations):
        self.cfg = cfg
        self.ops = ops
        self.evolve_sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p,
                                        max_tokens=cfg.evolve_max_tokens)
        self.answer_sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p,
                                        max_tokens=cfg.answer_max_tokens, logprobs=cfg.logprobs)
        self.judge_sampling = Sampling(temperature=cfg.judge_temperature, top_p=1.0,
                                       max_tokens=cfg.judge_max_tokens)

    def _messages(self, user: str) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.cfg.system}] if self.cfg.system else []
        msgs.append({"role": "user", "content": user})
        return msgs

    def _chat(self, ctx: RunContext, step: str, reqs: list[ChatRequest], stats: Counter) -> list[Completion]:
        if not reqs:
            return []
        t0 = time.perf_counter()
        comps = ctx.teacher.chat(reqs)
        stats["teacher_seconds"] += time.perf_counter() - t0
        stats["teacher_calls"] += len(reqs)
        stats[f"calls_{step}"] += len(reqs)
        for c in comps:
            stats["tokens_prompt"] += c.usage.prompt_tokens
            stats["tokens_completion"] += c.usage.completion_tokens
        if all(c.unanswered for c in comps):  # nothing came back: stop now, not after two more steps
            e = comps[0].error
            raise TeacherUnavailable(
                f"the teacher did not answer any of {len(reqs)} requests ({e.kind}: {e.message}); "
                "check it with `distill teacher ping`; finished shards are kept, rerun to resume")
        return comps

    def run(self, rows: list[dict[str, Any]], round_no: int, ctx: RunContext,
            room: int | None = None) -> ShardOutcome:
        """Evolve `rows` once; `room` caps how many evolutions may be accepted (max_rows)."""
        stats: Counter = Counter()
        # 1. evolve
        choices = [self.ops.choose(ctx.seed, r["id"], round_no) for r in rows]
        prompts = [prompt_text(r) for r in rows]
        reqs = [ChatRequest(self._messages(self.ops.render(c, p)), self.evolve_sampling,
                            record_id=r["id"], purpose=f"evol:evolve:{c.op}:round={round_no}")
                for r, c, p in zip(rows, choices, prompts)]
        comps = self._chat(ctx, "evolve", reqs, stats)
        cands = []
        for r, c, p, comp in zip(rows, choices, prompts, comps):
            evolved = parse_evolution(comp.text)
            cand = _Cand(r, c, p, evolved, comp)
            if cand.ask(comp):
                cand.drop = check_evolution(p, evolved, comp, c.op, self.cfg)
            cands.append(cand)
            stats[f"op_tried_{c.op}"] += 1
        # 2. judge: is the evolution more than its parent?
        live = [c for c in cands if c.drop is None]
        reqs = [ChatRequest(self._messages(self.ops.render_judge(c.parent_prompt, c.evolved)),
                            self.judge_sampling, record_id=records.make_id(c.evolved),
                            purpose=f"evol:judge:parent={c.parent['id']}") for c in live]
        for cand, comp in zip(live, self._chat(ctx, "judge", reqs, stats)):
            cand.judge = comp
            if cand.ask(comp):
                cand.verdict, cand.drop = check_judge(comp, self.cfg)
                stats[f"judge_{cand.verdict}"] += 1
        # 3. answer what the judge let through; a cut-off answer is asked once more with a larger budget
        live = [c for c in cands if c.drop is None]
        window = context_window(ctx)
        reqs = [fit_budget(ChatRequest(self._messages(c.evolved), self.answer_sampling,
                                       record_id=records.make_id(c.evolved), purpose="evol:answer"), window)
                for c in live]
        reqs, attempts = retry_truncated(lambda rs: self._chat(ctx, "answer_retry", rs, stats), window, reqs,
                                         self._chat(ctx, "answer", reqs, stats), enabled=self.cfg.retry_truncated,
                                         max_tokens=self.cfg.retry_truncated_max_tokens, stats=stats)
        for cand, req, tries in zip(live, reqs, attempts):
            cand.answer, cand.answer_tries, cand.answer_sampling = tries[-1], tries, req.sampling
            if all(cand.ask(c) for c in tries):
                cand.drop = check_answer(cand.evolved, cand.answer, self.cfg, req.sampling.max_tokens)
        return self._assemble(cands, round_no, ctx, room, stats)

    def _assemble(self, cands: list[_Cand], round_no: int, ctx: RunContext, room: int | None,
                  stats: Counter) -> ShardOutcome:
        kept, rejected, pool, unanswered = [], [], [], []
        for cand in cands:
            if cand.unanswered is not None:  # neither kept nor dropped: its shard is retried
                unanswered.append(cand.unanswered)
                pool.append(cand.parent)
                continue
            if cand.drop is None and room is not None and len(kept) >= room:
                cand.drop = Drop("over_max_rows", f"max_rows reached in round {round_no}")
            row = self._row(cand, round_no, ctx)
            if cand.drop is None:
                kept.append(row)
                stats[f"op_kept_{cand.choice.op}"] += 1
                pool.append(row)
                if self.cfg.keep_parents_in_pool:
                    pool.append(cand.parent)
            else:
                rejected.append(records.rejected_row(row, STAGE, cand.drop.reason, cand.drop.detail))
                pool.append(cand.parent)  # a failed evolution leaves its parent in the pool
        stats["evolved"] = len(kept)
        stats["failed"] = len(rejected)
        stats["teacher_seconds"] = round(stats["teacher_seconds"], 4)
        return ShardOutcome(kept, rejected, pool, dict(stats), unanswered)

    def _row(self, cand: _Cand, round_no: int, ctx: RunContext) -> dict[str, Any]:
        op = cand.choice.op
        answer = cand.answer.text if cand.answer is not None and cand.answer.ok else ""
        comps = [c for c in (cand.evolve, cand.judge) if c is not None] + cand.answer_tries
        teacher = ctx.teacher
        row = records.new_row(
            cand.evolved, "", answer or "", origin=f"evol:{op}", parent=cand.parent, run_id=ctx.run_id,
            system=self.cfg.system, reasoning=cand.answer.reasoning if answer else None,
            teacher_backend=teacher.backend, teacher_model=cand.evolve.model or teacher.model,
            sampling=(cand.answer_sampling or self.answer_sampling).to_json(),
            prompt_template=template_name(op), prompt_hash=self.ops.templates[op].hash,
            finish_reason=cand.answer.finish_reason if cand.answer is not None else None,
            prompt_tokens=sum(c.usage.prompt_tokens for c in comps),
            completion_tokens=sum(c.usage.completion_tokens for c in comps),
        )
        if answer:
            row["messages"] = records.build_messages(cand.evolved, "", answer, system=self.cfg.system)
        if not cand.evolved.strip():
            # No text means no content id; give the failed attempt an id of its own.
            row["id"] = records.make_id(f"evol-failed:{cand.parent['id']}:{op}:round={round_no}")
        records.set_meta(row, STAGE, {
            "operation": op,
            "data_format": cand.choice.data_format,
            "stage_round": round_no,  # `round` is the depth; a retried parent evolves in a later stage round
            "raw_evolution": cand.evolve.text,
            "evolve_finish": cand.evolve.finish_reason,
            "judge_reply": cand.judge.text if cand.judge is not None else None,
            "judge_verdict": cand.verdict,
            "evolve_sampling": self.evolve_sampling.to_dict(),
            "judge_sampling": self.judge_sampling.to_dict(),
            "answer_attempts": len(cand.answer_tries),
            "first_answer_finish": cand.answer_tries[0].finish_reason if len(cand.answer_tries) > 1 else None,
            **({"logprobs": logprobs.compact(cand.answer.logprobs, self.cfg.logprobs)}
               if self.cfg.logprobs and answer else {}),
        })
        return row
