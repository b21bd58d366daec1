"""`distill hard`: Lion's adversarial loop without the fine-tuning: the student answers, a referee
compares its answers with the teacher's, and the teacher writes new instructions after the hard ones.

Reads: any dataset folder. A row with an answer (`output`) is the teacher's answer to its instruction
(self_instruct, evol_instruct or an import). Writes: every input row, in order, then each round's new
instructions (`origin = "hard:<parent id>"`, parent_id / root_id of their parent). A judged row gets
meta.hard = {round, student_model, student_answer_sha256, referee_mode, referee_model, first_order,
teacher_score, student_score, student_gap, hard, scores_by_order} (a logprobs referee adds score_reads: each
score's value and probability mass, or why it has none); a row whose two reviews did not both give two scores
gets {round, student_answer_sha256, verdict: "unparseable", review_ends (text) or score_reads (logprobs)} and
no flag. A row without an answer passes through untouched.

One round per `rounds`, all inside the shard, against the same student (the pipeline does not train it;
a user who retrains points [hard.student] at the new checkpoint and reruns):
  1. the student answers each row of the round (round 1: the input rows with an answer; later rounds:
     the previous round's new instructions, which the teacher answers first, as Lion's imitation data);
  2. the referee scores each pair twice, the teacher's answer first and then second, from a generated
     review (`referee.py`) or from the score tokens' logprobs (`logprob_referee.py`; `[hard] referee`);
  3. the teacher writes new instructions after the hard rows and, `easy_ratio` as many, after easy ones
     (`generate.py`); Lion's filters and a ROUGE-L novelty check against the shard drop some, each with
     its reason in rejected/ (drop_stage "hard"). The last round's new rows have no answer: orca answers
     them, and minhash, semdedup and score see them like any other row.
A request that failed for a reason outside the row (connection, timeout, 5xx) leaves the shard
unanswered for the next run, as in every stage; what came back is in the response cache.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from ...context import RunContext
from ...errors import ConfigError
from ...prompts import load_template
from ...records import build_messages, get_meta, rejected_row, set_meta
from ...runner import ShardResult, run_shards
from ...store import Dataset
from ...teacher.base import ChatRequest, Sampling, unanswered_reasons
from ...teacher.factory import BATCH_BACKENDS, TeacherFactory
from ...teacher.ping import preflight
from ..self_instruct.rouge import RougeIndex
from . import generate, logprob_referee, referee
from .config import HardConfig, referee_mode

STAGE = "hard"


class Outside(Exception):
    """A request of the shard failed for a reason outside its row: the shard is left unanswered."""

    def __init__(self, reasons: dict[str, int]):
        self.reasons = reasons


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class HardStage:
    """The per-shard hard-example stage (implements runner.ShardStage)."""

    name = STAGE

    def __init__(self, cfg: HardConfig, student: Any = None, student_factory: Any = None,
                 judge: Any = None, judge_factory: Any = None):
        """`student` (or `student_factory`, built where the stage runs) answers; `judge` (or `judge_factory`)
        referees, default the run's teacher (ctx.teacher), who also writes the new instructions."""
        self.cfg = cfg
        self.student, self.student_factory = student, student_factory
        self.judge, self.judge_factory = judge, judge_factory
        self.building = threading.Lock()  # overlapping shards (runner.py) share one student and one judge

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("building")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, building=threading.Lock())

    def settings(self) -> dict[str, Any]:
        s = self.cfg.model_dump(mode="json", exclude={"student", "judge_teacher", "enabled"})
        st, jt = self.cfg.student_section(), self.cfg.judge_teacher
        s["student"] = {"backend": st.backend, "model": st.model, "base_url": st.base_url}
        s["judge_teacher"] = {"backend": jt.backend, "model": jt.model, "base_url": jt.base_url} if jt else "run teacher"
        s["prompts"] = {t: load_template(t).hash for t in (referee.TEMPLATE, logprob_referee.TEMPLATE,
                                                           *generate.TEMPLATES.values())}
        return s

    def teachers(self, ctx: RunContext) -> tuple[Any, Any]:
        with self.building:
            if self.student is None:
                self.student = self.student_factory()
            if self.judge is None and self.judge_factory is not None:
                self.judge = self.judge_factory()
        return self.student, self.judge if self.judge is not None else ctx.teacher

    def process(self, rows: list[dict[str, Any]], ctx: RunContext) -> ShardResult:
        stats: Counter = Counter()
        out = [dict(r) for r in rows]
        rejected: list[dict[str, Any]] = []
        index = RougeIndex(self.cfg.max_similarity)
        for r in out:
            index.add(r["instruction"])
        ids = {r["id"] for r in out}
        current = [r for r in out if (r.get("output") or "").strip()]
        stats["no_answer"] += len(out) - len(current)
        try:
            for round_no in range(1, self.cfg.rounds + 1):
                if round_no > 1:
                    current = self.answer(current, ctx, stats)
                judged = self.discriminate(current, round_no, ctx, stats)
                current = self.generate(judged, round_no, ctx, stats, index, ids, rejected)
                out.extend(current)
        except Outside as e:
            result = ShardResult(kept=[])
            for _ in range(len(rows)):
                result.leave_unanswered(e.reasons)
            return result
        return ShardResult(kept=out, rejected=rejected, stats=dict(stats))

    def answer(self, rows: list[dict[str, Any]], ctx: RunContext, stats: Counter) -> list[dict[str, Any]]:
        """The teacher's answers to last round's new instructions (in place); the rows it answered."""
        sampling = Sampling(temperature=0.7, max_tokens=self.cfg.answer_max_tokens)
        reqs = [ChatRequest(messages=({"role": "user", "content": generate.user_text(r)},), sampling=sampling,
                            record_id=r["id"], purpose="hard:teacher_answer") for r in rows]
        comps = ctx.teacher.chat(reqs)
        if reasons := unanswered_reasons(comps):
            raise Outside(reasons)
        answered = []
        for row, req, comp in zip(rows, reqs, comps):
            text = (comp.text or "").strip()
            if not comp.ok or not text or comp.finish_reason == "length":
                stats["teacher_answer_failed"] += 1  # kept without an answer: orca answers it
                continue
            row.update(output=text, messages=build_messages(row["instruction"], row.get("input") or "", text),
                       finish_reason=comp.finish_reason, sampling=sampling.to_json(),
                       completion_tokens=(row.get("completion_tokens") or 0) + comp.usage.completion_tokens,
                       prompt_tokens=(row.get("prompt_tokens") or 0) + comp.usage.prompt_tokens)
            answered.append(row)
        return answered

    def discriminate(self, rows: list[dict[str, Any]], round_no: int, ctx: RunContext,
                     stats: Counter) -> list[dict[str, Any]]:
        """Student answers, two reviews each, a verdict in meta.hard; the rows that got a verdict."""
        student, judge = self.teachers(ctx)
        s_sampling = Sampling(temperature=self.cfg.student_temperature, max_tokens=self.cfg.answer_max_tokens)
        s_reqs = [ChatRequest(messages=({"role": "user", "content": generate.user_text(r)},), sampling=s_sampling,
                              record_id=r["id"], purpose=f"hard:student:r{round_no}") for r in rows]
        s_comps = student.chat(s_reqs)
        if reasons := unanswered_reasons(s_comps):
            raise Outside(reasons)
        mode = referee_mode(self.cfg.referee, judge)
        if mode == "logprobs" and judge.backend in BATCH_BACKENDS:
            raise ConfigError(f"[hard] referee = 'logprobs' reads text-completion logprobs, which a judge on backend "
                              f"{judge.backend} cannot give: set [hard] referee = \"text\" or an online "
                              "[hard.judge_teacher]")
        r_sampling = Sampling(temperature=self.cfg.referee_temperature, max_tokens=self.cfg.referee_max_tokens)
        pending, reqs, items = [], [], []
        for row, comp in zip(rows, s_comps):
            if not comp.ok:
                stats[f"student_failed:{comp.error.kind if comp.error else 'empty'}"] += 1
                continue
            answer = (comp.text or "").strip()
            rng = ctx.rng(row["id"], f"hard:order:r{round_no}")
            rq, orders = referee.requests(row["id"], generate.user_text(row), row["output"], answer or "(no answer)",
                                          r_sampling, rng)
            pending.append((row, answer, comp, orders))
            reqs.extend(rq)
            items.append((row["id"], generate.user_text(row), row["output"], answer or "(no answer)", orders))
        if mode == "logprobs":
            scored, reviews = logprob_referee.judge(judge, items, self.cfg.referee_logprobs)
        else:
            reviews = judge.chat(reqs)
        if reasons := unanswered_reasons(reviews):
            raise Outside(reasons)
        judged = []
        for i, (row, answer, comp, orders) in enumerate(pending):
            first = reviews[(4 if mode == "logprobs" else 2) * i]
            info: dict[str, Any] = {"round": round_no, "student_model": comp.model or student.model,
                                    "student_answer_sha256": sha(answer), "referee_mode": mode,
                                    "referee_model": first.model or judge.model, "first_order": orders[0]}
            if mode == "logprobs":
                pairs, details = scored[i]
                v = referee.verdict_of(pairs, self.cfg.threshold) if pairs is not None else None
                info["score_reads"] = details  # per order and assistant: {score, mass} or why there is none
            else:
                texts = {orders[k]: reviews[2 * i + k].text for k in range(2)}
                v = referee.verdict(texts, self.cfg.threshold)
            if v is None:
                info["verdict"] = "unparseable"  # the reviews' ends (or the score reads) say why
                if mode == "text":
                    info["review_ends"] = {o: (t or "")[-120:] for o, t in texts.items()}
                stats["referee_unparseable"] += 1
            else:
                info.update(v.to_meta())
                stats["judged"] += 1
                stats["hard" if v.hard else "easy"] += 1
                judged.append(row)
            set_meta(row, STAGE, {**(get_meta(row, STAGE, {}) or {}), **info})  # a new row keeps its origin
        return judged

    def generate(self, judged: list[dict[str, Any]], round_no: int, ctx: RunContext, stats: Counter,
                 index: RougeIndex, ids: set[str], rejected: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """New instructions after the hard (and some easy) rows of this round; the accepted ones."""
        hard = [r for r in judged if _flag(r)]
        easy = [r for r in judged if not _flag(r)]
        key = judged[0]["id"] if judged else ""
        asks = generate.plan(hard, easy, self.cfg.per_hard, self.cfg.easy_ratio,
                             ctx.rng(key, f"hard:easy_parents:r{round_no}"))
        reqs = [generate.request(a, self.cfg.generate_temperature, self.cfg.generate_max_words_factor, round_no)
                for a in asks]
        comps = ctx.teacher.chat(reqs) if reqs else []
        if reasons := unanswered_reasons(comps):
            raise Outside(reasons)
        accepted = []
        for ask, req, comp in zip(asks, reqs, comps):
            text = generate.clean(comp.text)
            row = generate.new_instruction(ask, text or "(none)", comp, req, round_no, ctx.teacher, ctx.run_id)
            if not comp.ok or not text:
                drop = ("generation_failed", comp.error.kind if comp.error else "empty reply")
            elif (d := generate.check(text, comp.finish_reason)) is not None:
                drop = d
            elif row["id"] in ids:
                drop = ("duplicate", f"same task as {row['id']}")
            elif (m := index.most_similar(text)) is not None:
                drop = ("too_similar", f"ROUGE-L {m.score:.3f} > {self.cfg.max_similarity} with: {index.texts[m.index][:80]}")
            else:
                drop = None
            if drop is not None:
                stats[f"generated_dropped:{drop[0]}"] += 1
                rejected.append(rejected_row(row, STAGE, drop[0], drop[1]))
                continue
            index.add(text)
            ids.add(row["id"])
            stats[f"generated_{ask.kind}"] += 1
            accepted.append(row)
        return accepted


def _flag(row: dict[str, Any]) -> bool:
    return bool((get_meta(row, STAGE, {}) or {}).get("hard"))


def run_hard(input: str | Path, out: str | Path, cfg: HardConfig, ctx: RunContext, *,
             shard_rows: int = 1000, limit: int | None = None) -> dict[str, Any]:
    """Judge every answered row of `input` against the student, write the rows and the new instructions to
    `out`; returns the manifest. The student (and a separate referee) is built from its own factory: here,
    or by each Ray worker."""
    ds = Dataset(input, require_complete=True)
    workdir = Path(ctx.workdir).resolve()
    for section in (cfg.student_section(), cfg.judge_teacher):  # a dead student or referee is exit 4 before the first shard
        if section is not None:
            preflight(TeacherFactory(section, workdir, ctx.seed))
    with ExitStack() as stack:
        side = stack.enter_context(ctx.executor.side_teacher(TeacherFactory(cfg.student_section(), workdir, ctx.seed)))
        extra: dict[str, Any] = {"student": side.info, "judge_teacher": "run teacher"}
        judge = judge_factory = None
        if cfg.judge_teacher is not None:
            jside = stack.enter_context(ctx.executor.side_teacher(TeacherFactory(cfg.judge_teacher, workdir, ctx.seed)))
            judge, judge_factory, extra["judge_teacher"] = jside.teacher, jside.factory, jside.info
        stage = HardStage(cfg, side.teacher, side.factory, judge, judge_factory)
        return run_shards(stage, ds, out, ctx, shard_rows=shard_rows, limit=limit, manifest_extra=extra)
