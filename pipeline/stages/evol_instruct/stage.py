"""Evol-Instruct over rounds: the pool, the budgets, resume, and the assembled output.

Reads one instruction dataset (any origin). Writes, under the output folder:

    _rounds/round-NN/   the evolutions tried in round NN: accepted rows, and
                        rejected/ with drop_stage "evol_instruct" and the reason
    _rounds/pool-NN/    the pool after round NN (the input of round NN+1): each
                        accepted evolution takes its parent's place, a failed
                        one leaves the parent there
    part-*.parquet      the stage's output: the input rows (round 0, unless
                        include_inputs is off) then every accepted evolution of
                        every round; rejected/ holds every failed evolution
    _manifest.json      written last, with per-round counts and drop reasons

Each round is `runner.run_shards(RoundStage)` over the pool, on whatever
executor the run has (the same `ShardEvolver` locally or as Ray tasks), into
a dataset written shard by shard with done markers; the driver then writes
the next pool shard by shard from each pool shard and the evolutions it
produced (`next_pool`). So a killed run restarts at the first unfinished
shard of the first unfinished round and asks the teacher nothing for
finished shards (the shard in flight is answered from the teacher's response
cache). Budgets (max_rows, max_tokens_total: a child of the run's budget,
ctx.budget) are counted from the done markers, so they hold across restarts
too, and are checked by the runner before each shard, in shard order (which
needs the local executor); raising them or the number of rounds and rerunning
continues the same run.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa

from ... import records, truncation
from ...context import RunContext
from ...runner import run_shards
from ...store import DONE_DIR, REJECTED_DIR, Dataset, DatasetWriter, fingerprint, shard_name
from ...teacher.base import TeacherUsage
from ...teacher.budget import Budget
from .config import EvolConfig
from .operations import Operations
from .shard import STAGE, RoundStage, ShardEvolver, pool_order

ROUNDS_DIR = "_rounds"
SAMPLING_NOTE = ("temperature and top_p for evolving and answering follow the official WizardLM code "
                 "(openai_access.py: temperature 1, top_p 0.95); the paper reports top_p 0.9 for answers. "
                 "The equality judge samples at judge_temperature (default 0).")


def round_dir(out: Path, r: int) -> Path:
    return out / ROUNDS_DIR / f"round-{r:02d}"


def pool_dir(out: Path, r: int) -> Path:
    return out / ROUNDS_DIR / f"pool-{r:02d}"


STOPS = {"rows": "max_rows", "tokens": "max_tokens_total"}  # a budget's limit -> the stage's stop reason


def own_budget(cfg: EvolConfig, out: Path, run_budget: Budget) -> Budget:
    """max_rows and max_tokens_total within the run's budget, counted from the done markers of every round so far."""
    budget = run_budget.child(max_rows=cfg.max_rows, max_tokens=cfg.max_tokens_total)
    for r in range(1, cfg.rounds + 1):
        for marker in _markers(round_dir(out, r)):
            _spend(budget, marker)
    return budget


def _spend(budget: Budget, marker: dict[str, Any]) -> None:
    """What one round shard (its done marker) spent: its completions' tokens, cache hits included, and
    its accepted evolutions."""
    budget.spend(int(marker.get("tokens_prompt", 0)), int(marker.get("tokens_completion", 0)),
                 rows=int(marker.get("evolved", 0)))


def run_evol_instruct(input_path: str | Path, out: str | Path, ctx: RunContext, cfg: EvolConfig, *,
                      shard_rows: int = 1000, limit: int | None = None) -> dict[str, Any]:
    """Evolve every instruction of `input_path` for `cfg.rounds` rounds; return the output manifest."""
    input_ds = Dataset(input_path, require_complete=True)
    out = Path(out)
    ops = Operations(cfg)
    evolver = ShardEvolver(cfg, ops)
    budget = own_budget(cfg, out, ctx.budget)
    base_plan = {"shard_rows": shard_rows, "seed": ctx.seed, "settings": cfg.settings(),
                 "templates": ops.hashes()}
    t0 = time.monotonic()
    stopped: str | None = None
    pool: Dataset = input_ds
    rounds_done = 0
    teacher: dict[str, Any] | None = None
    for r in range(1, cfg.rounds + 1):
        lim = limit if r == 1 else None
        plan = dict(base_plan, round=r, input=str(pool.path.resolve()), limit=lim,
                    **({"input_fingerprint": fingerprint(input_ds)} if r == 1 else {}))  # later pools are its own
        m = run_shards(RoundStage(evolver, r, budget), pool, round_dir(out, r), ctx, shard_rows=shard_rows,
                       limit=lim, plan=plan, manifest_extra={"round": r}, budget=budget, spend=_spend)
        teacher = m.get("teacher") or teacher  # on Ray the workers build the teacher, not this process
        pool_w = DatasetWriter(pool_dir(out, r), STAGE + "_pool", plan=plan)
        _write_pool(pool, round_dir(out, r), pool_w, cfg.keep_parents_in_pool, shard_rows, lim)
        if "stopped_by" in m:
            stopped = STOPS[m["stopped_by"]]
            break
        pool_w.write_manifest(round=r, run_id=ctx.run_id)
        rounds_done = r
        pool = Dataset(pool_dir(out, r), require_complete=True)
    extra = {
        "run_id": ctx.run_id, "input": str(input_ds.path), "limit": limit, "shard_rows": shard_rows,
        "rounds": cfg.rounds, "rounds_done": rounds_done, "stopped_by": stopped,
        "budget": {"max_rows": budget.max_rows, "max_tokens_total": budget.max_tokens,
                   "rows": budget.rows, "tokens": budget.tokens},
        "settings": cfg.settings(), "sampling_note": SAMPLING_NOTE, "prompt_hashes": ops.hashes(),
        "wall_seconds_this_invocation": round(time.monotonic() - t0, 3),
    }
    if ctx.has_teacher:
        extra["teacher"] = {"backend": ctx.teacher.backend, "model": ctx.teacher.model}
    elif teacher is not None:
        extra["teacher"] = teacher
    return assemble(out, input_ds, cfg, shard_rows=shard_rows, limit=limit,
                    plan=dict(base_plan, input=str(input_ds.path.resolve()), limit=limit), extra=extra)


def _write_pool(pool: Dataset, rd: Path, pool_w: DatasetWriter, keep_parents: bool, shard_rows: int,
               limit: int | None) -> None:
    """The next pool, shard k from pool shard k and the evolutions round shard k accepted, for every
    round shard done. It follows the round's done marker: a kill between the two leaves a done round
    shard whose pool shard the rerun writes here, from the files (the round's shard is not redone)."""
    done = {m["shard"] for m in _markers(rd)}
    round_ds = Dataset(rd)
    for spec in pool.plan(shard_rows, limit):
        if spec.index in done and not pool_w.is_done(spec.index):
            # as Arrow tables, taken in `next_pool`'s order: no rows turned into Python objects
            parents = records.conform(spec.read())
            kept = records.conform(round_ds.file(rd / shard_name(spec.index)).read())
            order = pool_order(parents.column("id").to_pylist(), kept.column("parent_id").to_pylist(), keep_parents)
            both = pa.concat_tables([parents, kept])
            take = [parents.num_rows + i if from_kept else i for from_kept, i in order]
            pool_w.write_shard(spec.index, both.take(take), None, {"rows_in": spec.rows})


def _clear_shards(out: Path) -> None:
    """Drop an earlier assembly's shards (the manifest is already gone): rounds may have grown since."""
    for folder, pattern in ((out, "part-*.parquet"), (out / REJECTED_DIR, "part-*.parquet"),
                            (out / DONE_DIR, "part-*.json")):
        if folder.is_dir():
            for p in folder.glob(pattern):
                p.unlink()


def assemble(out: Path, input_ds: Dataset, cfg: EvolConfig, *, shard_rows: int, limit: int | None,
             plan: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Write the output folder from the input rows and the rounds' shards; manifest last."""
    writer = DatasetWriter(out, STAGE, plan=plan)  # removes a previous manifest first
    _clear_shards(out)
    index = 0
    rows_in = 0
    for spec in input_ds.plan(shard_rows, limit):
        rows_in += spec.rows
        if cfg.include_inputs:
            writer.write_shard(index, spec.read_rows(), None, {"input_rows": spec.rows})
            index += 1
    per_round = []
    ops_tried: Counter = Counter()
    ops_kept: Counter = Counter()
    for r in range(1, cfg.rounds + 1):
        rd = round_dir(out, r)
        if not (rd / DONE_DIR).is_dir():
            break
        summary: Counter = Counter()
        drops: Counter = Counter()
        kept_ds = Dataset(rd)
        rej_ds = kept_ds.rejected()
        for marker in _markers(rd):
            name = shard_name(marker["shard"])
            kept = kept_ds.file(rd / name).read()
            rej_path = rd / REJECTED_DIR / name
            rej = rej_ds.file(rej_path).read() if rej_path.exists() else None
            if kept.num_rows or (rej is not None and rej.num_rows):
                usage = TeacherUsage(requests=marker.get("teacher_calls", 0), prompt_tokens=marker.get("tokens_prompt", 0),
                                     completion_tokens=marker.get("tokens_completion", 0))
                cut = {k: v for k, v in marker.items() if k.startswith(truncation.PREFIX)}  # -> manifest "truncation"
                writer.write_shard(index, kept, rej, {"evolved_rows": kept.num_rows, **cut, **usage.marker(
                    "requests", "prompt_tokens", "completion_tokens")})
                index += 1
            drops.update(marker.get("drops", {}))
            for k, v in marker.items():
                if k.startswith("op_tried_"):
                    ops_tried[k[len("op_tried_"):]] += v
                elif k.startswith("op_kept_"):
                    ops_kept[k[len("op_kept_"):]] += v
                elif k.startswith(truncation.PREFIX) or k in (
                        "rows_in", "evolved", "failed", "teacher_calls", "calls_evolve", "calls_judge",
                        "calls_answer", "calls_answer_retry", "tokens_prompt",
                           "tokens_completion", "teacher_seconds", "seconds"):
                    summary[k] += v
        per_round.append({"round": r, "complete": (rd / "_manifest.json").exists(),
                          **{k: round(v, 3) if isinstance(v, float) else v for k, v in summary.items()
                             if not k.startswith(truncation.PREFIX)},
                          **({"truncation": t} if (t := truncation.summary(summary)) else {}),
                          "drops": dict(sorted(drops.items()))})
    accepted = sum(p.get("evolved", 0) for p in per_round)
    calls = sum(p.get("teacher_calls", 0) for p in per_round)
    extra = dict(extra, rows_in=rows_in, per_round=per_round,
                 operations={"weights": cfg.operations, "tried": dict(ops_tried), "kept": dict(ops_kept)},
                 evolutions_accepted=accepted,
                 teacher_calls_per_accepted=round(calls / accepted, 3) if accepted else None)
    return writer.write_manifest(**extra)


def _markers(rd: Path) -> list[dict[str, Any]]:
    """The done markers of one round folder, in shard order (none when it was never started)."""
    done = rd / DONE_DIR
    if not done.is_dir():
        return []
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(done.glob("part-*.json"))]
