"""Verify stage: verified reasoning traces for tasks with a checkable final answer (rejection sampling).

Reads: any dataset folder (instruction, input; the reference answer in `output` with `reference = "output"`).
Writes: one row per kept trace: origin "verify", a new id per (row, sample) with `parent_id` the input row,
`output` the teacher's trace (`reasoning` its separate reasoning, when it gave one), `messages` user + answer
(the answer-format system prompt is not part of the training turn), and in `meta.verify` the sample index,
its normalised final answer, the target and where it came from (reference or majority), the row's
agreement rate, the per-answer counts. rejected/ holds every other sample with its reason, and rows that
cannot be checked (a reference too long: `not_checkable`) once, unasked.

Per row: `samples` requests (sample_index 0..n-1, so each has its own seed) under prompts/verify/system.txt;
each answer's final answer is extracted and normalised (extract.py), the vote (vote.py) sets the target, and a
sample is kept when it agrees. Drop reasons: the answer checks Orca applies (teacher_error, too_long,
empty_output, truncated, refusal), no_final_answer, wrong_answer (against the reference),
disagrees_with_majority, no_majority (no reference and no answer above the majority share), extra_trace
(keep = "first"). A row whose requests failed for a reason outside it is left unanswered (asked again on
the next run), as everywhere.

Why a stage of its own (under `distill orca`, as `distill orca verify`) and not an option of `distill orca
generate`: Orca answers each row once and keeps its id (1 row in, 1 out); this samples n answers and keeps
0..n, needs a reference (or a vote) and a prompt that asks for a stated final answer, and its drops are per
sample. It reuses Orca's answer checks. It is not a step of `distill run`: a general instruction pool has
few checkable rows, and verify drops the rest (not_checkable).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

from ....context import RunContext
from ....prompts import load_template
from ....records import build_messages, make_id, now_utc, rejected_row, set_meta
from ....runner import ShardResult, run_shards
from ....store import Dataset
from ....teacher.base import ChatRequest, Completion, Sampling, unanswered_reasons
from ..answers import check_answer
from .config import VerifyConfig
from .extract import answer_kind, final_span, normalize, reference_answer, spans_kind
from .vote import vote

STAGE = "verify"
TEMPLATE = "verify/system.txt"
ANSWER_FORMATS = {"number": "the number only", "choice": "the letter of the chosen option only",
                  "text": "a short phrase only", None: "the final answer only"}
_STALE = ("flags", "quality", "complexity", "accuracy", "score", "minhash_cluster", "semdedup_cluster",
          "finish_reason", "prompt_tokens", "completion_tokens", "strategy")


def sample_id(row_id: str, index: int) -> str:
    """The id of sample `index` of row `row_id`: stable, and distinct per sample."""
    return hashlib.sha256(f"{row_id}\x1fverify:{index}".encode()).hexdigest()[:24]


def question_of(row: dict[str, Any]) -> str:
    return build_messages(row.get("instruction") or "", row.get("input") or "")[0]["content"]


class VerifyStage:
    """The per-shard verify stage (implements runner.ShardStage)."""

    name = STAGE

    def __init__(self, cfg: VerifyConfig | None = None):
        self.cfg = cfg or VerifyConfig()
        self.template = load_template(TEMPLATE)
        self.sampling = Sampling(temperature=self.cfg.temperature, top_p=self.cfg.top_p,
                                 max_tokens=self.cfg.max_tokens)

    def settings(self) -> dict[str, Any]:
        return dict(self.cfg.model_dump(), prompt_hash=self.template.hash)

    def system(self, kind: str | None) -> str:
        return self.template.render(answer_format=ANSWER_FORMATS[kind]).strip()

    def process(self, rows: list[dict[str, Any]], ctx: RunContext) -> ShardResult:
        cfg, n = self.cfg, self.cfg.samples
        rows = [dict(r, id=r.get("id") or make_id(r.get("instruction") or "", r.get("input") or "")) for r in rows]
        kept: list[dict[str, Any]] = []
        rejected: list[dict[str, Any]] = []
        result = ShardResult(kept=kept, rejected=rejected)
        stats: Counter = Counter()
        plans, reqs = [], []
        for row in rows:
            question = question_of(row)
            ref_text = (row.get("output") or "").strip() if cfg.reference == "output" else ""
            kind = answer_kind(ref_text or None, question, cfg.max_text_words)
            ref = reference_answer(ref_text, kind, question) if ref_text and kind else None
            if ref_text and ref is None:
                rejected.append(rejected_row(dict(row), STAGE, "not_checkable",
                                             f"the reference ({len(ref_text.split())} words) has no number, option "
                                             f"letter or short answer of at most {cfg.max_text_words} words"))
                stats["verify.not_checkable"] += 1
                continue
            system = self.system(kind)
            plans.append((row, question, ref_text, kind, ref, system))
            msgs = [{"role": "system", "content": system}, {"role": "user", "content": question}]
            reqs += [ChatRequest(messages=msgs, sampling=self.sampling, record_id=row["id"], purpose="verify:answer",
                                 sample_index=i) for i in range(n)]
        comps = ctx.teacher.chat(reqs) if reqs else []
        for k, (row, question, ref_text, kind, ref, system) in enumerate(plans):
            mine = comps[k * n:(k + 1) * n]
            if reasons := unanswered_reasons(mine):  # the teacher's fault, not the row's: ask again next run
                result.leave_unanswered(reasons)
                continue
            checks = [check_answer(c, truncated=cfg.truncated, drop_refusals=cfg.drop_refusals) for c in mine]
            spans = [final_span(c.text or "") if drop is None else "" for c, drop in zip(mine, checks)]
            if kind is None:  # no reference, no options: most spans decide between number and text
                kind = spans_kind([s for s, drop in zip(spans, checks) if drop is None])
            answers = [normalize(s, kind, question) if drop is None else None for s, drop in zip(spans, checks)]
            v = vote(answers, ref, kind, majority=cfg.majority, max_text_words=cfg.max_text_words)
            stats["verify.rows"] += 1
            stats["verify.samples"] += n
            stats["verify.agreeing"] += sum(v.agreeing)
            stats[f"verify.target.{v.source}"] += 1
            stats[f"verify.kind.{kind}"] += 1
            info = {"samples": n, "kind": kind, "target": v.target, "target_source": v.source,
                    "reference": ref_text or None, "agreement": round(v.agreement, 4), "agreeing": sum(v.agreeing),
                    "answers": v.counts, "input_origin": row.get("origin")}
            n_kept = 0
            for i, (c, drop, answer, ok) in enumerate(zip(mine, checks, answers, v.agreeing)):
                out = self._sample_row(row, i, c, system, ctx)
                set_meta(out, STAGE, dict(info, sample_index=i, answer=answer))
                if drop is None and answer is None:
                    drop = ("no_final_answer", f"no {kind} answer in the final line: {spans[i][:80]!r}")
                elif drop is None and v.target is None:
                    drop = ("no_majority", f"no answer given by more than {cfg.majority:.0%} of {n} samples: "
                                           f"{dict(list(v.counts.items())[:4])}")
                elif drop is None and not ok:
                    drop = (("wrong_answer", f"answered {answer!r}, the reference is {v.target!r}")
                            if v.source == "reference" else
                            ("disagrees_with_majority", f"answered {answer!r}, the majority {v.target!r}"))
                elif drop is None and cfg.keep == "first" and n_kept:
                    drop = ("extra_trace", "keep = 'first': an earlier sample of this row is kept")
                if drop is None:
                    out["messages"] = build_messages(row.get("instruction") or "", row.get("input") or "",
                                                     out["output"])
                    kept.append(out)
                    n_kept += 1
                else:
                    rejected.append(rejected_row(out, STAGE, *drop))
            stats["verify.rows_kept"] += bool(n_kept)
        for r in kept:  # the manifest's totals: traces kept with a separate reasoning, and its length in characters
            if r["reasoning"]:
                stats["reasoning_rows"] += 1
                stats["reasoning_chars"] += len(r["reasoning"])
        result.stats = dict(stats)
        return result

    def _sample_row(self, row: dict[str, Any], index: int, c: Completion, system: str,
                    ctx: RunContext) -> dict[str, Any]:
        out = dict(row)
        for col in _STALE:
            out[col] = None
        out.update(
            id=sample_id(row["id"], index), parent_id=row["id"], root_id=row.get("root_id") or row["id"],
            origin=STAGE, output=(c.text or "").strip(), reasoning=c.reasoning, messages=None, system=system,
            teacher_backend=ctx.teacher.backend, teacher_model=c.model or ctx.teacher.model,
            sampling=self.sampling.to_json(), prompt_template=TEMPLATE, prompt_hash=self.template.hash,
            finish_reason=c.finish_reason, prompt_tokens=c.usage.prompt_tokens,
            completion_tokens=c.usage.completion_tokens, run_id=ctx.run_id, created_at=now_utc())
        return out


def run_verify(input: str | Path | Dataset, out: str | Path, ctx: RunContext, settings: VerifyConfig | None = None,
               *, shard_rows: int = 1000, limit: int | None = None, executor: str | None = None) -> dict[str, Any]:
    """Sample, extract, vote and keep the verified traces of `input` in `out`; return the manifest."""
    ds = input if isinstance(input, Dataset) else Dataset(input, require_complete=True)
    stage = VerifyStage(settings)
    return run_shards(stage, ds, out, ctx, shard_rows=shard_rows, limit=limit, executor=executor,
                      manifest_extra={"prompt_hashes": {TEMPLATE: stage.template.hash}})
