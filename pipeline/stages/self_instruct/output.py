"""A Self-Instruct run's state (accepted tasks, counters), turned into rows: classification, instances,
provenance; and read back for a resume.

Reads nothing but the done shards of the stage's own folder (`restore`, for
resume). `ShardBuilder` builds each task's classification and instance
requests and turns their replies into kept and rejected rows with their
reasons: task by task for the window schedule (`classified`, `instanced`),
or for a whole shard in one teacher call per step (`build`, the paper schedule).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from ... import logprobs, records
from ...context import RunContext
from ...errors import TeacherUnavailable
from ...store import REJECTED_DIR, DatasetError, DatasetWriter, atomic_write_bytes, shard_name
from ...teacher.base import ChatRequest, Completion, TeacherUsage, unanswered_reasons
from ...teacher.budget import Budget
from . import alpaca, bootstrap
from . import instances as inst
from .config import SelfInstructConfig
from .seeds import SeedPool


@dataclass
class Task:
    """An accepted instruction on its way to becoming rows."""

    instruction: str
    pool_index: int
    where: dict[str, int]                    # batch, request, item
    similar: list[dict[str, Any]]
    mean_similarity: float | None
    tokens: list[float]                      # [prompt, completion] attributed to this task
    triple: tuple[str, str] | None = None    # alpaca mode: (input, output)


@dataclass
class Counters:
    budget: Budget         # requests and tokens of every completion (cached too), against max_requests / max_tokens_total
    batches: int = 0
    idle: int = 0          # bootstrap requests in a row that accepted nothing (not persisted)
    extra: dict[str, float] = field(default_factory=dict)

    def count(self, comps: list[Completion], kind: str) -> None:
        self.budget.spend(sum(c.usage.prompt_tokens for c in comps), sum(c.usage.completion_tokens for c in comps),
                          requests=len(comps))
        self.bump(f"{kind}_requests", len(comps))
        for c in comps:
            self.bump("teacher_errors", 0 if c.ok else 1)
            self.bump("cache_hits", 1 if c.cached else 0)

    def usage(self) -> TeacherUsage:
        prompt, completion, requests = self.budget.counters()[:3]
        return TeacherUsage(requests=requests, prompt_tokens=prompt, completion_tokens=completion)

    def bump(self, key: str, n: float = 1) -> None:
        self.extra[key] = self.extra.get(key, 0) + n


STAGE = "self_instruct"
RAW_DIR = "raw"


def stop_if_unanswered(comps: list[Completion], step: str, shards_done: int) -> None:
    """TeacherUnavailable (exit 4) when any of `comps` failed for a reason outside the row: the loop
    builds each batch from the pool the last one grew, so it stops there rather than drop them; the
    done shards stay and a rerun resumes after them (the cache answers what already came back)."""
    if reasons := unanswered_reasons(comps):
        why = ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1]))
        raise TeacherUnavailable(
            f"self_instruct: {sum(reasons.values())} of {len(comps)} {step} requests unanswered ({why}); "
            f"{shards_done} done shard(s) kept, nothing after them marked done; rerun to resume")


def error_reason(c: Completion) -> str:
    """The drop reason of a row-caused teacher failure: too_long (never sent), else teacher_error."""
    return "too_long" if c.error is not None and c.error.kind == "too_long" else "teacher_error"


@dataclass
class Restored:
    shards: int = 0
    machine: list[str] = field(default_factory=list)
    batches: int = 0
    usage: TeacherUsage = field(default_factory=TeacherUsage)  # requests and tokens of every completion
    requests: list[int] = field(default_factory=list)  # per pool item: the bootstrap request that made it (window)


def marker_stats(now: tuple[int, TeacherUsage], mark: tuple[int, TeacherUsage]) -> dict[str, int]:
    """(batches, usage) grown since `mark`, under the marker names: per-shard deltas sum to run totals."""
    used = now[1].delta(mark[1])
    return {"batches": now[0] - mark[0], "requests": used.requests, **used.marker("prompt_tokens", "completion_tokens")}


def restore(writer: DatasetWriter) -> Restored:
    """The machine pool (in acceptance order) and run counters from the done shards."""
    state = Restored()
    markers = writer.done_markers()
    if [m.get("shard") for m in markers] != list(range(len(markers))):
        raise DatasetError(f"{writer.path}: done shards are not contiguous; write to a new --out")
    state.shards = len(markers)
    used = [TeacherUsage.from_marker(m) for m in markers]
    state.batches = sum(int(m.get("batches", 0)) for m in markers)
    state.usage = TeacherUsage(requests=sum(u.requests for u in used), prompt_tokens=sum(u.prompt_tokens for u in used),
                               completion_tokens=sum(u.completion_tokens for u in used))
    pool: dict[int, str] = {}
    made_by: dict[int, int] = {}
    for i in range(state.shards):
        for path in (writer.path / shard_name(i), writer.path / REJECTED_DIR / shard_name(i)):
            if not path.exists():
                continue
            table = pq.read_table(path, columns=["instruction", "meta"])
            for text, meta in zip(table.column("instruction").to_pylist(), table.column("meta").to_pylist()):
                m = json.loads(meta).get(STAGE, {}) if meta else {}
                pos = m.get("pool_index")
                if pos is not None:
                    pool.setdefault(pos, text)
                    made_by.setdefault(pos, int(m.get("request", 0)))
    if sorted(pool) != list(range(len(pool))):
        raise DatasetError(f"{writer.path}: the accepted-instruction pool in the done shards has gaps; "
                           "write to a new --out")
    state.machine = [pool[i] for i in range(len(pool))]
    state.requests = [made_by[i] for i in range(len(pool))]
    return state


class ShardBuilder:
    def __init__(self, cfg: SelfInstructConfig, ctx: RunContext, templates: dict[str, str],
                 counters: "Counters", shards_done: int = 0):
        self.cfg, self.ctx, self.templates, self.counters = cfg, ctx, templates, counters
        self.shards_done = shards_done
        self._sampling_memo: dict[bool | None, str] = {}

    @staticmethod
    def templates(cfg: SelfInstructConfig) -> list[str]:
        if cfg.mode == "alpaca":
            return []
        return [inst.CLASSIFY_TEMPLATE, inst.INPUT_FIRST_TEMPLATE, inst.OUTPUT_FIRST_TEMPLATE]

    @staticmethod
    def rejected_candidate(text: str, reason: str, detail: str, where: dict[str, int], run_id: str,
                           mode: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        row = records.new_row(text, origin=STAGE, run_id=run_id)
        records.set_meta(row, STAGE, dict(where, mode=mode, **(extra or {})))
        return records.rejected_row(row, STAGE, reason, detail)

    # -- teacher calls ------------------------------------------------------------
    def _sampling_json(self, is_clf: bool | None) -> str:
        if is_clf not in self._sampling_memo:   # one string per kind of row, not one json.dumps per row
            self._sampling_memo[is_clf] = self._sampling_dump(is_clf)
        return self._sampling_memo[is_clf]

    def _sampling_dump(self, is_clf: bool | None) -> str:
        cfg = self.cfg
        if cfg.mode == "alpaca":
            return json.dumps({"alpaca": cfg.alpaca.sampling(alpaca.stop_sequences(cfg)).to_dict()}, sort_keys=True)
        d = {"bootstrap": cfg.bootstrap.sampling(bootstrap.stop_sequences(cfg)).to_dict(),
             "classify": cfg.classify.sampling(inst.classify_stop()).to_dict()}
        if is_clf is not None:
            d["instances"] = self._instance_sampling(is_clf).to_dict()
        return json.dumps(d, sort_keys=True)

    def _instance_sampling(self, is_clf: bool):
        c = self.cfg.instances
        return replace(c.sampling(inst.instance_stop(c.max_instances),
                                  max_tokens=c.max_tokens_classification if is_clf else c.max_tokens),
                       logprobs=self.cfg.logprobs)

    def _task_id(self, task: "Task") -> str:
        return records.make_id(task.instruction)

    def classify_request(self, t: "Task") -> ChatRequest:
        return ChatRequest(messages=[{"role": "user", "content": inst.classify_prompt(t.instruction)}],
                           sampling=self.cfg.classify.sampling(inst.classify_stop()),
                           record_id=self._task_id(t), purpose=f"{STAGE}:classify")

    def instances_request(self, t: "Task", clf: bool) -> ChatRequest:
        return ChatRequest(messages=[{"role": "user", "content": inst.instance_prompt(t.instruction, clf)}],
                           sampling=self._instance_sampling(clf), record_id=self._task_id(t),
                           purpose=f"{STAGE}:instances")

    def classified(self, t: "Task", c: Completion) -> tuple[bool, str] | dict[str, Any]:
        """The classification reply of `t`: (is classification, answer), or the task's rejected row."""
        t.tokens[0] += c.usage.prompt_tokens
        t.tokens[1] += c.usage.completion_tokens
        if not c.ok:
            return self._task_reject(t, error_reason(c), f"classification: {c.error.kind}: {c.error.message}")
        verdict = inst.classification_verdict(c.text)
        self.counters.bump("classification_unclear", 1 if verdict == "unclear" else 0)
        return verdict == "yes", c.text

    def instanced(self, t: "Task", clf: bool, answer: str,
                  g: Completion) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The instance reply of `t`: its kept rows and rejected rows."""
        self.counters.bump("classification_tasks", 1 if clf else 0)
        t.tokens[0] += g.usage.prompt_tokens
        t.tokens[1] += g.usage.completion_tokens
        if not g.ok:
            return [], [self._task_reject(t, error_reason(g), f"instances: {g.error.kind}: {g.error.message}",
                                          is_clf=clf)]
        parsed = inst.parse_classification(g.text) if clf else inst.parse_generation(g.text)
        rng = self.ctx.rng(self._task_id(t), f"{STAGE}:instances")
        good, dropped = inst.filter_instances(parsed, g.truncated, self.cfg.instances.max_instances, rng)
        meta = {"classification_answer": answer, "instances_raw": g.text}
        rows, dup = self._rows(t, [(i.input, i.output) for i in good], clf, meta, g, self._logprobs(g, good))
        rejected = []
        for d in dropped + [inst.Dropped(inst.Instance(*p), "duplicate_input", "same normalised input as a kept instance")
                            for p in dup]:
            rejected.append(self._instance_reject(t, d, clf, meta))
        if not rows:
            reasons = sorted({d.reason for d in dropped}) or ["none parsed"]
            rejected.append(self._task_reject(t, "no_valid_instances", "instances: " + ", ".join(reasons),
                                              is_clf=clf, extra=meta))
        return rows, rejected

    def _logprobs(self, g: Completion, good: list["inst.Instance"]) -> list[dict[str, Any]] | None:
        """Per instance, its output's own top-k logprobs (`[self_instruct] logprobs`) for its row's meta."""
        lp = logprobs.compact(g.logprobs, self.cfg.logprobs) if self.cfg.logprobs else None
        if not lp:
            return None
        out = []
        for i in good:
            got = inst.output_logprobs(g.text, lp, i.span) if i.span else None
            self.counters.bump("logprobs_unaligned", 0 if got else 1)
            out.append({"logprobs": got[0], "logprobs_trim": got[1]} if got else {})
        return out

    def build(self, tasks: list["Task"]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Classify and make instances for a shard's `tasks`, one teacher call per step (the paper schedule)."""
        if not tasks:
            return [], []
        if self.cfg.mode == "alpaca":
            return self._alpaca_rows(tasks), []
        teacher = self.ctx.teacher
        cls = teacher.chat([self.classify_request(t) for t in tasks])
        stop_if_unanswered(cls, "classification", self.shards_done)
        self.counters.count(cls, "classify")
        kept: list[dict[str, Any]] = []
        rejected: list[dict[str, Any]] = []
        todo = []
        for t, c in zip(tasks, cls):
            got = self.classified(t, c)
            if isinstance(got, dict):
                rejected.append(got)
            else:
                todo.append((t, *got))
        gens = teacher.chat([self.instances_request(t, clf) for t, clf, _ in todo])
        stop_if_unanswered(gens, "instances", self.shards_done)
        self.counters.count(gens, "instances")
        for (t, clf, answer), g in zip(todo, gens):
            rows, rej = self.instanced(t, clf, answer, g)
            kept += rows
            rejected += rej
        return kept, rejected

    def alpaca_rows(self, t: "Task") -> list[dict[str, Any]]:
        return self._rows(t, [t.triple], None, {})[0]

    # -- rows -------------------------------------------------------------------
    def _meta(self, t: "Task", is_clf: bool | None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        m = dict(t.where, mode=self.cfg.mode, pool_index=t.pool_index, most_similar=t.similar,
                 mean_similarity=t.mean_similarity, templates=self.templates)
        m.update(extra or {})
        return m

    def _rows(self, t: "Task", pairs: list[tuple[str, str]], is_clf: bool | None, extra: dict[str, Any],
              comp=None, own: list[dict[str, Any]] | None = None) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
        teacher = self.ctx.teacher
        template = inst.instance_template(bool(is_clf)) if self.cfg.mode != "alpaca" else "self_instruct/alpaca.txt"
        seen: set[str] = set()
        rows, dup, mine = [], [], []
        for j, (inp, out) in enumerate(pairs):
            rid = records.make_id(t.instruction, inp)
            if rid in seen:        # one id per (instruction, input): later outputs are dropped
                dup.append((inp, out))
                continue
            seen.add(rid)
            mine.append(own[j] if own else {})
            rows.append(records.new_row(
                t.instruction, inp, out, origin=STAGE, run_id=self.ctx.run_id,
                messages=records.build_messages(t.instruction, inp, out), is_classification=is_clf,
                task_kind="classification" if is_clf else None, teacher_backend=teacher.backend,
                teacher_model=(comp.model if comp is not None and comp.model else teacher.model),
                sampling=self._sampling_json(is_clf), prompt_template=template,
                prompt_hash=self.templates.get(template),
                finish_reason=comp.finish_reason if comp is not None else None))
        # Split the task's tokens over its rows so that the rows' sums equal the task's cost.
        for k, col in enumerate(("prompt_tokens", "completion_tokens")):
            total = int(round(t.tokens[k]))
            for i, row in enumerate(rows):
                row[col] = total // len(rows) + (total % len(rows) if i == 0 else 0)
        for row, m in zip(rows, mine):
            records.set_meta(row, STAGE, self._meta(t, is_clf, {**extra, **m}))
        return rows, dup

    def _task_reject(self, t: "Task", reason: str, detail: str, is_clf: bool | None = None,
                     extra: dict[str, Any] | None = None) -> dict[str, Any]:
        row = records.new_row(t.instruction, origin=STAGE, run_id=self.ctx.run_id, is_classification=is_clf)
        records.set_meta(row, STAGE, self._meta(t, is_clf, extra))
        return records.rejected_row(row, STAGE, reason, detail)

    def _instance_reject(self, t: "Task", d: "inst.Dropped", is_clf: bool, extra: dict[str, Any]) -> dict[str, Any]:
        row = records.new_row(t.instruction, d.instance.input, d.instance.output, origin=STAGE,
                              run_id=self.ctx.run_id, is_classification=is_clf)
        records.set_meta(row, STAGE, self._meta(t, is_clf, extra))
        return records.rejected_row(row, STAGE, d.reason, d.detail)

    def _alpaca_rows(self, tasks: list["Task"]) -> list[dict[str, Any]]:
        rows = []
        for t in tasks:
            rows += self._rows(t, [t.triple], None, {})[0]
        return rows

    def seed_rows(self, seeds: SeedPool) -> list[dict[str, Any]]:
        rows, seen = [], set()
        for task in seeds.tasks:
            for inp, out in task.instances:
                if records.make_id(task.instruction, inp) in seen:
                    continue
                seen.add(records.make_id(task.instruction, inp))
                rows.append(records.new_row(
                    task.instruction, inp, out, origin="seed", run_id=self.ctx.run_id,
                    messages=records.build_messages(task.instruction, inp, out),
                    is_classification=task.is_classification, task_kind=task.kind))
        return rows

    @staticmethod
    def write_raw(out: Path, shard: int, raw: list[dict[str, Any]]) -> None:
        """The raw bootstrap completions of a shard (the paper keeps them; so do we)."""
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in raw)
        atomic_write_bytes(out / RAW_DIR / shard_name(shard).replace(".parquet", ".jsonl"), body.encode("utf-8"))
