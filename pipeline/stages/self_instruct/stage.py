"""The Self-Instruct stage: grow a task pool from seeds with the teacher, then make instances.

Reads a seed pool (`seeds.py`: the team's data/seed_tasks.jsonl by default).
Writes one dataset folder: one row per instance (origin `self_instruct`),
`rejected/` with every dropped candidate, instance and failed response and its
reason, `raw/part-NNNNN.jsonl` with the raw bootstrap completions, and
`_manifest.json` last (stop reason, counts, seeds, templates, teacher).

Two schedules (`[self_instruct] schedule`, docs/DEPARTURES.md):

- `window` (default): `window` requests in flight (the teacher's concurrency).
  Bootstrap request k is built, with an rng seeded by k, from the pool as it
  stood once the replies to requests 0..k-window were filtered, and is sent as
  soon as that one was; replies are filtered (ROUGE-L against the whole pool,
  the paper's filters) in request order through a reorder buffer. The accepted
  set is thus a function of the seed, the window and the teacher's answers,
  never of their timing. Each accepted task's classification and instance
  requests go out in the same window, ahead of new bootstrap requests.
- `paper`: the paper's loop, batches of `request_batch_size` prompts built
  from one pool state, each waiting for all its replies; a shard's tasks are
  classified and given instances when the shard is full.

Either way every accepted instruction joins the pool in acceptance order, and
a shard is cut after the reply that brings it to `shard_tasks` tasks and
written, in order, once its tasks have their instances. A killed run resumes
from its done shards: the pool is reloaded from them (each row records its
pool position and the request that made it), the request counter continues,
and the teacher cache answers any repeated request (a kill repeats at most the
requests that were in flight).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ...context import RunContext
from ...novelty_monitor import NoveltyMonitor
from ...prompts import load_template
from ...runner import Progress
from ...store import DatasetWriter, shard_name
from ...teacher.base import ChatRequest, Completion
from . import alpaca, bootstrap
from .config import SelfInstructConfig
from .output import RAW_DIR, Counters, ShardBuilder, Task, error_reason, marker_stats, restore, stop_if_unanswered
from .rouge import RougeIndex
from .seeds import SeedPool, load_seeds
from .window import Window, calls_overlap, teacher_concurrency

STAGE = "self_instruct"


def run_self_instruct(out: str | Path, ctx: RunContext, config: SelfInstructConfig | None = None,
                      seeds: str | Path | SeedPool | None = None,
                      echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the stage into `out`; returns the manifest."""
    cfg = config or SelfInstructConfig()
    pool = seeds if isinstance(seeds, SeedPool) else load_seeds(seeds if seeds is not None else cfg.seeds)
    return _Run(Path(out), cfg, ctx, pool, echo or (lambda s: None)).run()


class _Run:
    def __init__(self, out: Path, cfg: SelfInstructConfig, ctx: RunContext, seeds: SeedPool,
                 echo: Callable[[str], None]):
        self.out, self.cfg, self.ctx, self.seeds, self.echo = out, cfg, ctx, seeds, echo
        names = ([alpaca.TEMPLATE] if cfg.mode == "alpaca" else [bootstrap.TEMPLATE]) + ShardBuilder.templates(cfg)
        self.templates = {n: load_template(n).hash for n in names}
        seed_digest = hashlib.sha256("\x1e".join(t.instruction for t in seeds.tasks).encode()).hexdigest()[:16]
        self.writer = DatasetWriter(out, STAGE, plan={
            "settings": cfg.replay_settings(), "seeds": seed_digest, "run_seed": ctx.seed,
            "templates": self.templates})
        self.filter = bootstrap.InstructionFilter(cfg)
        self.index = RougeIndex(cfg.rouge_threshold)
        self.seed_texts = [t.instruction for t in seeds.tasks]
        for text in self.seed_texts:
            self.index.add(text)
        self.counters = Counters(ctx.budget.child(max_requests=cfg.max_requests, max_tokens=cfg.max_tokens_total))
        self.machine: list[str] = []
        self.shard = 0
        self.pending: list[Task] = []
        self.rejected: list[dict[str, Any]] = []
        self.raw: list[dict[str, Any]] = []
        self.novelty_seconds = 0.0
        self.made_by: list[int] = []   # per machine instruction: the bootstrap request that made it (window)
        self.window_size = 0
        self.peak_in_flight = 0
        # `[run] min_novelty`: every item the teacher wrote, shard by shard (novelty_monitor.py)
        self.monitor = NoveltyMonitor(ctx.novelty_minhash, ctx.min_novelty)
        self.candidates: list[str] = []
        self.novelty_stop: dict[str, Any] | None = None

    # -- state ------------------------------------------------------------------
    def _restore(self) -> None:
        state = restore(self.writer)
        self.shard = state.shards
        self.machine = state.machine
        self.made_by = state.requests
        c = self.counters
        c.batches = state.batches
        c.budget.spend(state.usage.prompt_tokens, state.usage.completion_tokens, requests=state.usage.requests)
        for text in self.machine:
            self.index.add(text)
        self._mark = (c.batches, c.usage())
        for i in range(self.shard):  # the monitor sees the done shards again, from their raw replies
            raw = self.out / RAW_DIR / shard_name(i).replace(".parquet", ".jsonl")
            lines = raw.read_text(encoding="utf-8").splitlines() if raw.is_file() else []
            replies = [r for r in map(json.loads, lines) if r.get("error") is None and r.get("text") is not None]
            self.measure([text for r in replies for _, text, _ in self.reply_items(r["text"]) if text], i)
        if self.shard:
            self.echo(f"resuming: {self.shard} shard(s) done, {len(self.machine)} instructions in the "
                      f"machine pool, {c.batches} batches, {state.usage.requests} requests so far")

    def _stop_reason(self) -> tuple[str, str] | None:
        cfg, c, b = self.cfg, self.counters, self.counters.budget
        if len(self.machine) >= cfg.num_instructions:
            return "target_reached", f"{len(self.machine)} instructions"
        if (limit := b.exhausted_by) is not None:
            b.note(limit)
        if limit == "requests":
            return "max_requests", f"{b.requests} requests made (limit {b.max_requests})"
        if limit == "tokens":
            return "max_tokens_total", f"{b.tokens} tokens used (limit {b.max_tokens})"
        if self.novelty_stop:
            return "min_novelty", self.novelty_stop["message"]
        if c.idle >= cfg.patience:
            return "no_progress", f"{c.idle} bootstrap requests in a row accepted no instruction"
        return None

    def measure(self, texts: list[str], shard: int) -> dict[str, Any] | None:
        """Shard `shard`'s novelty point (every item its replies held); notes the stop when it is under
        `[run] min_novelty`."""
        point = self.monitor.observe(texts, f"shard {shard}")
        if self.monitor.below(point):
            self.novelty_stop = self.monitor.stopped(point, STAGE)
        return point

    def reply_items(self, text: str) -> list[tuple[int, str, Any]]:
        if self.cfg.mode == "alpaca":
            return [(t.position, t.instruction, t) for t in alpaca.parse_reply(text)]
        return [(i.position, i.text, i) for i in bootstrap.parse_items(text, self.cfg)]

    # -- the loop ---------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        t0 = time.monotonic()
        self._restore()
        bar = Progress(self.cfg.num_instructions, STAGE, self.ctx.progress)
        bar.update(min(len(self.machine), self.cfg.num_instructions))
        try:
            stop = self._run_paper(bar) if self.cfg.schedule == "paper" else _Windowed(self, bar).run()
        finally:
            bar.close()
        reason, detail = stop
        if reason != "target_reached":
            self.echo(f"stopped before the target: {reason} ({detail}); "
                      f"{len(self.machine)}/{self.cfg.num_instructions} instructions accepted")
        t = self.ctx.teacher if self.ctx.has_teacher else None
        window = {"window": self.window_size, "peak_in_flight": self.peak_in_flight} if self.window_size else {}
        return self.writer.write_manifest(
            run_id=self.ctx.run_id, mode=self.cfg.mode, schedule=self.cfg.schedule, **window,
            target=self.cfg.num_instructions,
            accepted_instructions=len(self.machine), stop_reason=reason, stop_detail=detail,
            novelty=self.monitor.summary(), **({"stopped": self.novelty_stop} if reason == "min_novelty" else {}),
            seeds=self.seeds.summary(), templates=self.templates, settings=self.cfg.model_dump(),
            teacher={"backend": t.backend, "model": t.model} if t is not None else None,
            novelty_filter_seconds_this_invocation=round(self.novelty_seconds, 3),
            wall_seconds_this_invocation=round(time.monotonic() - t0, 3))

    def _run_paper(self, bar: Progress) -> tuple[str, str]:
        while (stop := self._stop_reason()) is None:
            before = len(self.machine)
            errors = self._batch()
            bar.update(len(self.machine) - before, errors=errors)
            if len(self.pending) >= self.cfg.shard_tasks:
                self._flush()
        self._flush()
        return stop

    def bootstrap_request(self, rid: str, machine: list[str]) -> ChatRequest:
        """The bootstrap prompt `rid`, its in-context tasks drawn (rng seeded by `rid`) from `machine`."""
        cfg = self.cfg
        rng = self.ctx.rng(rid, "self_instruct:prompt")
        if cfg.mode == "alpaca":
            prompt = alpaca.render_prompt(alpaca.sample_examples(self.seeds.tasks, cfg, rng), cfg)
            sampling = cfg.alpaca.sampling(alpaca.stop_sequences(cfg))
        else:
            tasks = bootstrap.sample_in_context(self.seed_texts, machine, cfg, rng)
            prompt = bootstrap.render_prompt(tasks, cfg)
            sampling = cfg.bootstrap.sampling(bootstrap.stop_sequences(cfg))
        return ChatRequest(messages=[{"role": "user", "content": prompt}], sampling=sampling,
                           record_id=rid, purpose=f"{STAGE}:bootstrap")

    def _requests(self) -> list[ChatRequest]:
        b = self.counters.batches
        return [self.bootstrap_request(f"batch{b:06d}-{j}", self.machine) for j in range(self.cfg.request_batch_size)]

    def _batch(self) -> int:
        """One batch of bootstrap requests; returns how many failed."""
        reqs = self._requests()   # every prompt of a batch sees the same pool, as in the paper
        comps = self.ctx.teacher.chat(reqs)
        stop_if_unanswered(comps, "bootstrap", self.shard)
        b = self.counters.batches
        self.counters.batches += 1
        self.counters.count(comps, "bootstrap")
        for j, comp in enumerate(comps):
            self.raw.append({"batch": b, "request": j, "text": comp.text, "finish_reason": comp.finish_reason,
                             "error": comp.error.message if comp.error else None, "cached": comp.cached,
                             "usage": [comp.usage.prompt_tokens, comp.usage.completion_tokens]})
            accepted = self._take(comp, {"batch": b, "request": j})
            self.counters.idle = 0 if accepted else self.counters.idle + 1
        return sum(1 for c in comps if not c.ok)

    def _take(self, comp: Completion, where: dict[str, int]) -> int:
        """Parse one bootstrap reply and run its items through the filters; returns how many joined the pool."""
        cfg = self.cfg
        if not comp.ok:
            self._reject("", error_reason(comp), f"{comp.error.kind}: {comp.error.message}", where)
            return 0
        items = self.reply_items(comp.text)
        self.candidates.extend(text for _, text, _ in items if text)
        if cfg.mode == "alpaca":
            max_items = cfg.alpaca.num_tasks - 1 - cfg.alpaca.num_seed_examples
        else:
            max_items = cfg.last_item - cfg.num_prompt_instructions
        if not any(text for _, text, _ in items):
            self._reject("", "no_items", f"nothing parsed from the reply: {(comp.text or '')[:300]!r}", where)
            return 0
        share = [comp.usage.prompt_tokens / len(items), comp.usage.completion_tokens / len(items)]
        if comp.truncated:
            if cfg.on_truncation == "discard":
                for pos, text, _ in items:
                    self._reject(text, "response_truncated", "the reply was cut by max_tokens: all of it is discarded",
                                 dict(where, item=pos))
                return 0
            pos, text, _ = items.pop()
            self._reject(text, "item_truncated", "last item of a reply cut by max_tokens", dict(where, item=pos))
        accepted = 0
        for pos, text, item in items:
            at = dict(where, item=pos)
            if pos > max_items:
                self._reject(text, "beyond_last_item", f"item {pos} of the reply; at most {max_items} are read", at)
            elif getattr(item, "preamble", False):
                alone = len(items) == 1 and cfg.stop_at_blank_line and cfg.mode != "alpaca"
                self._reject(text, "chat_preamble", "a lead-in line, not a task" + (
                    "; the reply ended at the blank line after it (the paper's stop)" if alone else ""), at)
            elif getattr(item, "malformed", ""):
                self._reject(text, "malformed_item", item.malformed, at)
            elif len(self.machine) >= cfg.num_instructions:
                self._reject(text, "target_reached", "not evaluated: the target was already reached", at)
            else:
                triple = (item.input, item.output) if cfg.mode == "alpaca" else None
                accepted += self._consider(text, at, list(share), triple)
        return accepted

    def _consider(self, text: str, where: dict[str, int], tokens: list[float],
                  triple: tuple[str, str] | None) -> int:
        problem = self.filter.check(text)
        if problem:
            self._reject(text, problem[0], problem[1], where)
            return 0
        t0 = time.perf_counter()
        match = self.index.most_similar(text)
        if match is not None:
            self.novelty_seconds += time.perf_counter() - t0
            other = self.index.texts[match.index]
            origin = "seed" if match.index < len(self.seed_texts) else "machine"
            self._reject(text, "rouge_l_too_similar",
                         f"ROUGE-L {match.score:.4f} > {self.cfg.rouge_threshold} with {origin} instruction {other[:120]!r}",
                         where, extra={"similar_to": other, "score": match.score})
            return 0
        similar, mean = [], None
        if self.cfg.similar_top_k:
            top, mean = self.index.top_k(text, self.cfg.similar_top_k)
            similar = [{"instruction": self.index.texts[m.index], "score": m.score} for m in top]
        self.index.add(text)
        self.novelty_seconds += time.perf_counter() - t0
        self.pending.append(Task(text, len(self.machine), where, similar, mean, tokens, triple))
        self.machine.append(text)
        self.made_by.append(where.get("request", 0))
        return 1

    def _reject(self, text: str, reason: str, detail: str, where: dict[str, int],
                extra: dict[str, Any] | None = None) -> None:
        self.counters.bump("rows_in")
        self.rejected.append(ShardBuilder.rejected_candidate(text, reason, detail, where, self.ctx.run_id,
                                                             self.cfg.mode, extra))

    def _flush(self) -> None:
        if not (self.pending or self.rejected or self.raw):
            return
        builder = ShardBuilder(self.cfg, self.ctx, self.templates, self.counters, self.shard)
        kept, rejected = builder.build(self.pending)
        if self.cfg.include_seeds and self.shard == 0:
            kept = builder.seed_rows(self.seeds) + kept
        self.counters.bump("rows_in", len(self.pending))
        self.counters.bump("accepted_instructions", len(self.pending))
        c = self.counters
        now = (c.batches, c.usage())
        # Per-shard stats are deltas since the previous shard, so the manifest's sums are run totals.
        stats = dict(c.extra, **marker_stats(now, self._mark))
        if (point := self.measure(self.candidates, self.shard)) is not None:
            stats["novelty"] = point
        builder.write_raw(self.out, self.shard, self.raw)
        self.writer.write_shard(self.shard, kept, self.rejected + rejected, stats)
        self.shard += 1
        self._mark = now
        self.pending, self.rejected, self.raw, self.candidates = [], [], [], []
        c.extra = {}


@dataclass
class _Shard:
    """A shard on its way out: the tasks, rejects and raw replies of the bootstrap replies folded into it."""

    index: int
    tasks: list[Task] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    raw: list[dict[str, Any]] = field(default_factory=list)
    candidates: list[str] = field(default_factory=list)       # every item of its replies (the novelty monitor's)
    novelty: dict[str, Any] | None = None                      # its point, once measured
    extra: dict[str, float] = field(default_factory=dict)   # its counters (Counters.extra while its replies count)
    usage: list[int] = field(default_factory=lambda: [0, 0, 0])  # requests, prompt tokens, completion tokens
    batches: int = 0                                           # bootstrap requests folded into it
    kept: dict[int, list[dict[str, Any]]] = field(default_factory=dict)       # task -> its rows
    task_rejected: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    waiting: int = 0                                           # tasks whose instances are not back yet
    closed: bool = False

    @property
    def ready(self) -> bool:
        return self.closed and self.waiting == 0


class _Windowed:
    """The window schedule of one `_Run` (see the module docstring)."""

    def __init__(self, run: _Run, bar: Progress):
        self.run_, self.bar = run, bar
        teacher = run.ctx.teacher
        self.size = run.cfg.window or teacher_concurrency(teacher)
        self.window = Window(teacher, self.size, None if calls_overlap(teacher) else 1)
        run.window_size = self.size
        self.builder = ShardBuilder(run.cfg, run.ctx, run.templates, run.counters, run.shard)
        self.next = self.folded = run.counters.batches   # next bootstrap request to send / to filter
        self.start = self.folded
        self.accepted = 0                                 # this invocation's, for the yield estimate
        self.buffer: dict[int, Completion] = {}          # replies back before the ones ahead of them
        self.tasks: deque[tuple[Any, ChatRequest]] = deque()   # classification / instance requests ready
        self.shards: deque[_Shard] = deque()
        self.done = False                                 # the target or patience was reached, in request order
        self.capped = ""                                  # why max_requests stopped the bootstrap
        self._open()

    # -- shards -------------------------------------------------------------------
    def _open(self) -> None:
        r = self.run_
        shard = _Shard(index=(self.shards[-1].index + 1) if self.shards else r.shard)
        self.shards.append(shard)
        r.pending, r.rejected, r.raw, r.candidates = shard.tasks, shard.rejected, shard.raw, shard.candidates
        r.counters.extra = shard.extra

    def _count(self, shard: _Shard, comp: Completion, kind: str) -> None:
        c = self.run_.counters
        c.extra = shard.extra
        c.count([comp], kind)
        c.extra = self.shards[-1].extra
        shard.usage[0] += 1
        shard.usage[1] += comp.usage.prompt_tokens
        shard.usage[2] += comp.usage.completion_tokens

    def _write_ready(self) -> None:
        r = self.run_
        while self.shards and self.shards[0].ready and not (self.done and len(self.shards) == 1):
            shard = self.shards.popleft()
            kept = [row for i in sorted(shard.kept) for row in shard.kept[i]]
            rejected = shard.rejected + [row for i in sorted(shard.task_rejected) for row in shard.task_rejected[i]]
            if r.cfg.include_seeds and shard.index == 0:
                kept = self.builder.seed_rows(r.seeds) + kept
            shard.extra["rows_in"] = shard.extra.get("rows_in", 0) + len(shard.tasks)
            shard.extra["accepted_instructions"] = shard.extra.get("accepted_instructions", 0) + len(shard.tasks)
            stats = dict(shard.extra, batches=shard.batches, requests=shard.usage[0],
                         teacher_prompt_tokens=shard.usage[1], teacher_completion_tokens=shard.usage[2],
                         **({"novelty": shard.novelty} if shard.novelty else {}))
            self.builder.write_raw(r.out, shard.index, shard.raw)
            r.writer.write_shard(shard.index, kept, rejected, stats)
            r.shard = shard.index + 1
            self.builder.shards_done = r.shard

    def _close_open(self) -> None:
        self.shards[-1].closed = True
        self._open()

    # -- sending ------------------------------------------------------------------
    def _bootstrap_ok(self) -> bool:
        """Whether request `next` may go now: the reply `size` requests before it was filtered, no stop
        rule holds, and the replies in flight are not already expected to reach the target."""
        r = self.run_
        k = self.next
        if self.done or r.novelty_stop or k - self.folded >= self.size:
            return False
        cap = r.cfg.max_requests
        if cap is not None and (due := self._due(k)) >= cap:
            self.capped = f"about {due} requests made or due (limit {cap})"
            return False
        b = r.counters.budget
        if b.max_tokens is not None and b.tokens >= b.max_tokens:
            return False
        unfolded = k - self.folded
        if unfolded and self.folded > self.start:
            expect = self.accepted / (self.folded - self.start)
            if len(r.machine) + unfolded * expect >= r.cfg.num_instructions:
                return False
        return True

    def _due(self, k: int) -> int:
        """The requests made or due once request k is out: k bootstrap requests and two per task, the tasks
        extrapolated from those of the replies k's pool holds (a count of what is back by now would depend on
        the timing; this is the same on every rerun)."""
        read = k - self.size + 1
        return k + (round(2 * self._seen(k) * k / read) if read > 0 else 0)

    def _seen(self, k: int) -> int:
        """Machine instructions in request k's pool: those made by the replies before k - size + 1."""
        return bisect.bisect_left(self.run_.made_by, k - self.size + 1)

    def _bootstrap(self, k: int) -> ChatRequest:
        r = self.run_
        return r.bootstrap_request(f"request{k:07d}", r.machine[:self._seen(k)])

    def stop_reason(self) -> tuple[str, str]:
        r, c = self.run_, self.run_.counters
        b = c.budget
        if len(r.machine) >= r.cfg.num_instructions:
            return "target_reached", f"{len(r.machine)} instructions"
        if r.novelty_stop:
            return "min_novelty", r.novelty_stop["message"]
        if c.idle >= r.cfg.patience:
            return "no_progress", f"{c.idle} bootstrap requests in a row accepted no instruction"
        if self.capped:
            b.note("requests")
            return "max_requests", self.capped
        b.note("tokens")
        return "max_tokens_total", f"{b.tokens} tokens used (limit {b.max_tokens})"

    def _fill(self) -> None:
        items = []
        room = self.window.room()
        while room > 0:
            if self.tasks:
                items.append(self.tasks.popleft())
            elif self._bootstrap_ok():
                items.append((("b", self.next), self._bootstrap(self.next)))
                self.next += 1
            else:
                break
            room -= 1
        self.window.send(items)

    # -- replies ------------------------------------------------------------------
    def _fold(self, k: int, comp: Completion) -> None:
        """Filter bootstrap reply k, the next in request order, into the pool."""
        r, c = self.run_, self.run_.counters
        shard = self.shards[-1]
        stop_if_unanswered([comp], "bootstrap", r.shard)
        self._count(shard, comp, "bootstrap")
        r.raw.append({"request": k, "text": comp.text, "finish_reason": comp.finish_reason,
                      "error": comp.error.message if comp.error else None, "cached": comp.cached,
                      "usage": [comp.usage.prompt_tokens, comp.usage.completion_tokens]})
        first = len(r.pending)
        accepted = r._take(comp, {"request": k})
        c.idle = 0 if accepted else c.idle + 1
        c.batches += 1
        shard.batches += 1
        self.folded = k + 1
        self.accepted += accepted
        self.bar.update(accepted, errors=0 if comp.ok else 1)
        for i in range(first, len(r.pending)):
            t = r.pending[i]
            if r.cfg.mode == "alpaca":
                shard.kept[i] = self.builder.alpaca_rows(t)
            else:
                shard.waiting += 1
                self.tasks.append((("c", shard, i), self.builder.classify_request(t)))
        if len(r.machine) >= r.cfg.num_instructions or c.idle >= r.cfg.patience:
            self.done = True   # this shard is the last: written once nothing is in flight
        elif len(r.pending) >= r.cfg.shard_tasks:
            shard.novelty = r.measure(shard.candidates, shard.index)
            if r.novelty_stop:
                self.done = True   # under [run] min_novelty: this shard is the last, as for the target
            else:
                self._close_open()

    def _arrived(self, tag: tuple, comp: Completion) -> None:
        r = self.run_
        if tag[0] == "b":
            if self.done:   # sent ahead, past the target or patience: paid for, never filtered
                u = comp.usage
                r.counters.budget.spend(u.prompt_tokens, u.completion_tokens, requests=1)
                self.shards[-1].extra["bootstrap_unused"] = self.shards[-1].extra.get("bootstrap_unused", 0) + 1
                return
            self.buffer[tag[1]] = comp
            while not self.done and self.folded in self.buffer:
                self._fold(self.folded, self.buffer.pop(self.folded))
            return
        shard, i = tag[1], tag[2]
        t = shard.tasks[i]
        if tag[0] == "c":
            stop_if_unanswered([comp], "classification", r.shard)
            self._count(shard, comp, "classify")
            r.counters.extra = shard.extra
            got = self.builder.classified(t, comp)
            r.counters.extra = self.shards[-1].extra
            if isinstance(got, dict):
                shard.task_rejected[i] = [got]
                shard.waiting -= 1
            else:
                self.tasks.appendleft((("i", shard, i, *got), self.builder.instances_request(t, got[0])))
            return
        stop_if_unanswered([comp], "instances", r.shard)
        self._count(shard, comp, "instances")
        r.counters.extra = shard.extra
        kept, rejected = self.builder.instanced(t, tag[3], tag[4], comp)
        r.counters.extra = self.shards[-1].extra
        shard.kept[i], shard.task_rejected[i] = kept, rejected
        shard.waiting -= 1

    def run(self) -> tuple[str, str]:
        r = self.run_
        try:
            while True:
                self._fill()
                if self.window.in_flight == 0:
                    break
                for tag, comp in self.window.take():
                    self._arrived(tag, comp)
                self._write_ready()   # before more is sent: a kill repeats no more than it must
        finally:
            self.window.close()
            r.peak_in_flight = self.window.peak
        last = self.shards[-1]
        last.closed, self.done = True, False
        if last.tasks or last.rejected or last.raw or last.usage[0]:
            if last.novelty is None:
                last.novelty = r.measure(last.candidates, last.index)
            self._write_ready()
        return self.stop_reason()
