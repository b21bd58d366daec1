"""The Self-Instruct stage: grow a task pool from seeds with the teacher, then make instances.

Reads a seed pool (`seeds.py`: the team's data/seed_tasks.jsonl by default).
Writes one dataset folder: one row per instance (origin `self_instruct`),
`rejected/` with every dropped candidate, instance and failed response and its
reason, `raw/part-NNNNN.jsonl` with the raw bootstrap completions, and
`_manifest.json` last (stop reason, counts, seeds, templates, teacher).

The bootstrap loop is sequential over the pool: each batch of prompts is
built from the pool as it stands, and every accepted instruction joins the
pool at once. Accepted tasks are classified, given instances and written as a
shard every `shard_tasks` tasks. A killed run resumes from its done shards:
the pool is reloaded from them (each row records its pool position), the
batch counter continues, and the teacher cache answers any repeated request.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, Callable

from ...context import RunContext
from ...prompts import load_template
from ...runner import Progress
from ...store import DatasetWriter
from ...teacher.base import ChatRequest, Completion
from . import alpaca, bootstrap
from .config import SelfInstructConfig
from .output import Counters, ShardBuilder, Task, error_reason, marker_stats, restore, stop_if_unanswered
from .rouge import RougeIndex
from .seeds import SeedPool, load_seeds

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

    # -- state ------------------------------------------------------------------
    def _restore(self) -> None:
        state = restore(self.writer)
        self.shard = state.shards
        self.machine = state.machine
        c = self.counters
        c.batches = state.batches
        c.budget.spend(state.usage.prompt_tokens, state.usage.completion_tokens, requests=state.usage.requests)
        for text in self.machine:
            self.index.add(text)
        self._mark = (c.batches, c.usage())
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
        if c.idle >= cfg.patience:
            return "no_progress", f"{c.idle} bootstrap requests in a row accepted no instruction"
        return None

    # -- the loop ---------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        t0 = time.monotonic()
        self._restore()
        bar = Progress(self.cfg.num_instructions, STAGE, self.ctx.progress)
        bar.update(min(len(self.machine), self.cfg.num_instructions))
        try:
            while (stop := self._stop_reason()) is None:
                before = len(self.machine)
                errors = self._batch()
                bar.update(len(self.machine) - before, errors=errors)
                if len(self.pending) >= self.cfg.shard_tasks:
                    self._flush()
            self._flush()
        finally:
            bar.close()
        reason, detail = stop
        if reason != "target_reached":
            self.echo(f"stopped before the target: {reason} ({detail}); "
                      f"{len(self.machine)}/{self.cfg.num_instructions} instructions accepted")
        t = self.ctx.teacher if self.ctx.has_teacher else None
        return self.writer.write_manifest(
            run_id=self.ctx.run_id, mode=self.cfg.mode, target=self.cfg.num_instructions,
            accepted_instructions=len(self.machine), stop_reason=reason, stop_detail=detail,
            seeds=self.seeds.summary(), templates=self.templates, settings=self.cfg.model_dump(),
            teacher={"backend": t.backend, "model": t.model} if t is not None else None,
            novelty_filter_seconds_this_invocation=round(self.novelty_seconds, 3),
            wall_seconds_this_invocation=round(time.monotonic() - t0, 3))

    def _requests(self) -> list[ChatRequest]:
        cfg, b = self.cfg, self.counters.batches
        reqs = []
        for j in range(cfg.request_batch_size):
            rid = f"batch{b:06d}-{j}"
            rng = self.ctx.rng(rid, "self_instruct:prompt")
            if cfg.mode == "alpaca":
                prompt = alpaca.render_prompt(alpaca.sample_examples(self.seeds.tasks, cfg, rng), cfg)
                sampling = cfg.alpaca.sampling(alpaca.stop_sequences(cfg))
            else:
                tasks = bootstrap.sample_in_context(self.seed_texts, self.machine, cfg, rng)
                prompt = bootstrap.render_prompt(tasks, cfg)
                sampling = cfg.bootstrap.sampling(bootstrap.stop_sequences(cfg))
            reqs.append(ChatRequest(messages=[{"role": "user", "content": prompt}], sampling=sampling,
                                    record_id=rid, purpose=f"{STAGE}:bootstrap"))
        return reqs

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
        if cfg.mode == "alpaca":
            items = [(t.position, t.instruction, t) for t in alpaca.parse_reply(comp.text)]
            max_items = cfg.alpaca.num_tasks - 1 - cfg.alpaca.num_seed_examples
        else:
            items = [(i.position, i.text, i) for i in bootstrap.parse_items(comp.text, cfg)]
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
        builder.write_raw(self.out, self.shard, self.raw)
        self.writer.write_shard(self.shard, kept, self.rejected + rejected, stats)
        self.shard += 1
        self._mark = now
        self.pending, self.rejected, self.raw = [], [], []
        c.extra = {}
