"""`distill score`: gate, decontaminate and score every row of a dataset (a per-shard stage).

Reads any dataset folder; writes one with the rows that pass every hygiene
gate and the decontamination check, each carrying `flags`, the judge scores
(`quality`, `complexity`, `accuracy`, when judged) and the combined `score`.
Dropped rows go to `rejected/` with the first failing gate as drop_reason.
Per-row detail (every judgment's method and raw reply, the heuristic's parts,
the score source) is in `meta["score"]`. The source (`deita`, `rubric` or
`heuristic`, config.judge_mode) is in the manifest as `score_source`.

A row whose judgment cannot be parsed stays in the output with a null score
and a flag (`judge_unparseable:<score>` or `judge_error:<score>`): the
selection stage decides what to do with unscored rows, and the numbers
show how often the judge failed.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from ...context import RunContext
from ...embeddings.encoder import EmbeddingSection, make_encoder
from ...records import rejected_row, set_meta
from ...runner import ShardResult, run_shards
from ...store import Dataset
from ...teacher.factory import TeacherFactory
from ...teacher.ping import preflight
from . import gates
from .combine import HEURISTIC_VERSIONS, combined_score, heuristic_score, relevances
from .config import ScoreConfig, judge_mode
from .decontam import Decontaminator
from .judge import judge_rows, template_hashes

STAGE = "score"


class ScoreStage:
    name = STAGE

    def __init__(self, cfg: ScoreConfig, judge_teacher: Any = None, judge_factory: Any = None, *,
                 mode: str | None = None):
        """`judge_teacher`: a teacher for judging other than the run's (ctx.teacher), or None;
        or `judge_factory`, which builds it where the stage runs (a Ray worker builds its own).
        Either may be a dict {score: teacher or factory} when scores have their own teachers.
        `mode`: deita / rubric / heuristic (default: `judge_mode` with no run teacher known)."""
        self.cfg = cfg
        self.mode = mode or judge_mode(cfg, None)
        self.judge_teacher = judge_teacher
        self.judge_factory = judge_factory
        self.encoder: Any = None  # the heuristic's relevance encoder, built where the stage runs
        self.building = threading.Lock()  # overlapping shards (runner.py) share one encoder and one judge teacher
        self.decontam = Decontaminator(cfg.decontaminate, n=cfg.decontam_n, min_tokens=cfg.decontam_min_tokens,
                                       fields=tuple(cfg.decontam_fields)) if cfg.decontaminate else None

    def __getstate__(self) -> dict[str, Any]:
        state = {**self.__dict__, "encoder": None}  # a Ray worker loads its own
        state.pop("building")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, building=threading.Lock())

    def settings(self) -> dict[str, Any]:
        s = self.cfg.model_dump(mode="json", exclude={"judge_teacher", "judge_overrides"})
        s["score_source"] = self.mode
        if self.mode != "heuristic":
            s["judge_prompts"] = template_hashes(self.cfg.judges, self.mode)
            s["judge_teacher"] = {j: _who(self.cfg.teacher_for(j)) for j in self.cfg.judges}
        else:
            s["heuristic_version"] = HEURISTIC_VERSIONS[self.cfg.heuristic]
        if self.decontam is not None:  # a changed evaluation file must not resume on old verdicts
            s["decontaminate_sha256"] = {str(p): _sha256(p) for p in self.decontam.files}
        return s

    def process(self, rows: list[dict[str, Any]], ctx: RunContext) -> ShardResult:
        stats: Counter = Counter()
        kept: list[dict[str, Any]] = []
        rejected: list[dict[str, Any]] = []
        for row in rows:
            failures = gates.check_row(row, self.cfg)
            if not failures and self.decontam is not None:
                hit = self.decontam.check(row)
                if hit is not None:
                    failures.append(("contaminated", hit.detail()))
                    stats[f"contaminated[{hit.file}]"] += 1
            if failures:
                reason, detail = failures[0]
                if len(failures) > 1:
                    detail += "; also " + ", ".join(r for r, _ in failures[1:])
                rejected.append(rejected_row(row, STAGE, reason, detail))
            else:
                if gates.kept_refusal(row, self.cfg) is not None:
                    stats["refusal_kept"] += 1  # a refused harmful request, kept on purpose (gates.py)
                kept.append(dict(row))
        result = ShardResult(kept, rejected)
        if self.mode != "heuristic":
            self._judge(kept, ctx, stats, result)
        else:
            rel: list[Any] = [None] * len(kept)
            if self.cfg.heuristic == "length*relevance" and kept:
                with self.building:  # one model load, and one shard at a time through the encoder and its cache
                    if self.encoder is None:
                        # one text per forward pass: a vector that does not depend on which other texts shared
                        # its padded batch, so a shard rescored after a kill gets bit-identical scores
                        self.encoder = make_encoder(EmbeddingSection(model=self.cfg.relevance_model, batch_size=1),
                                                    ctx.workdir)
                    rel = relevances(kept, self.encoder)
            for row, r in zip(kept, rel):
                score, parts = heuristic_score(row, r)
                row.update(score=score, quality=None, complexity=None, accuracy=None,
                           flags=_flags(row, _gate_flags(row, self.cfg)))
                set_meta(row, STAGE, {"score_source": "heuristic", "heuristic": self.cfg.heuristic,
                                      "heuristic_version": HEURISTIC_VERSIONS[self.cfg.heuristic], **parts})
        stats["scored"] += sum(1 for r in kept if r["score"] is not None)
        stats["unscored"] += sum(1 for r in kept if r["score"] is None)
        result.stats = dict(stats)
        return result

    def _judge(self, kept: list[dict[str, Any]], ctx: RunContext, stats: Counter, result: ShardResult) -> None:
        """Judge `kept` in place; a row whose judge request failed for an outside reason leaves it, unanswered."""
        with self.building:
            if self.judge_teacher is None and self.judge_factory is not None:
                f = self.judge_factory
                self.judge_teacher = {j: g() for j, g in f.items()} if isinstance(f, dict) else f()
        given = self.judge_teacher

        def teacher(judge: str) -> Any:
            t = given.get(judge) if isinstance(given, dict) else given
            return t if t is not None else ctx.teacher

        judged = judge_rows(kept, teacher, self.cfg, self.mode)
        for i in reversed(range(len(kept))):
            if reasons := Counter(jd.reason.split(":")[0] for jd in judged[i].values() if jd.method == "unanswered"):
                result.leave_unanswered(dict(reasons))
                del kept[i], judged[i]
        for row, per in zip(kept, judged):
            values = {j: jd.value for j, jd in per.items()}
            new_flags = _gate_flags(row, self.cfg)
            for j, jd in per.items():
                stats[f"judge_{jd.method}[{j}]"] += 1
                if jd.method == "unparseable":
                    new_flags.append(f"judge_unparseable:{j}")
                elif jd.method == "error":
                    new_flags.append(f"judge_error:{j}")
            row.update(quality=values.get("quality"), complexity=values.get("complexity"),
                       accuracy=values.get("accuracy"), score=combined_score(values, self.cfg.combine))
            if row["score"] is None:
                new_flags.append("unscored")
            row["flags"] = _flags(row, new_flags)
            set_meta(row, STAGE, {"score_source": self.mode, "combine": self.cfg.combine,
                                  "judge_model": {j: getattr(teacher(j), "model", None) for j in per},
                                  "judgments": {j: jd.to_meta() for j, jd in per.items()}})


def _who(sec: Any) -> Any:
    return {"backend": sec.backend, "model": sec.model, "base_url": sec.base_url} if sec is not None else "run teacher"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _gate_flags(row: dict[str, Any], cfg: ScoreConfig) -> list[str]:
    # A kept refusal is marked so selection and export can count or drop them.
    return ["refusal_kept"] if gates.kept_refusal(row, cfg) is not None else []


def _flags(row: dict[str, Any], new: list[str]) -> list[str]:
    # A rerun of score replaces its own flags and keeps other stages' flags.
    mine = ("judge_unparseable:", "judge_error:", "unscored", "refusal_kept")
    old = [f for f in (row.get("flags") or []) if not f.startswith(mine)]
    return old + new


def run_teacher_backend(ctx: RunContext) -> str | None:
    """The run teacher's backend, without starting it when its factory says (None: no teacher)."""
    f = ctx.teacher_factory
    if f is None:
        return None
    section = getattr(f, "section", None)
    return section.backend if section is not None else getattr(ctx.teacher, "backend", None)


def run_score(input_path: str | Path, out: str | Path, cfg: ScoreConfig, ctx: RunContext, *,
              shard_rows: int = 1000, limit: int | None = None) -> dict[str, Any]:
    """Score `input_path` into `out`; returns the manifest.

    The judge mode is resolved once (config.judge_mode). Each separate judge
    teacher ([score.judge_teacher], with a score's judge_overrides) is built
    from its own factory: here, or by each Ray worker (a live teacher does not
    travel); scores whose sections are equal share one teacher.
    """
    ds = Dataset(input_path, require_complete=True)
    mode = judge_mode(cfg, run_teacher_backend(ctx) if cfg.judge == "auto" and cfg.judge_teacher is None else None)
    workdir = Path(ctx.workdir).resolve()
    sections: dict[str, Any] = {}  # score -> its own judge section (none: the run's teacher)
    if mode != "heuristic" and cfg.judge_teacher is not None:
        sections = {j: cfg.teacher_for(j) for j in cfg.judges}
    distinct = list({id(s): s for s in sections.values()}.values())
    if mode != "heuristic":  # a dead judge is exit 4 before the first shard (teacher/ping.py)
        for sec in distinct or [None]:
            preflight(TeacherFactory(sec, workdir, ctx.seed) if sec is not None else ctx.teacher_factory,
                      text_completion=mode == "deita")
    with ExitStack() as stack:
        judge: dict[str, Any] = {}
        factories: dict[str, Any] = {}
        info: Any = "run teacher" if mode != "heuristic" else None
        if distinct:
            info = {}
            for sec in distinct:
                side = stack.enter_context(ctx.executor.side_teacher(TeacherFactory(sec, workdir, ctx.seed)))
                for j, s in sections.items():
                    if s is sec:
                        judge[j], factories[j], info[j] = side.teacher, side.factory, side.info
            judge = judge if any(t is not None for t in judge.values()) else {}
            factories = factories if any(f is not None for f in factories.values()) else {}
        stage = ScoreStage(cfg, judge or None, factories or None, mode=mode)
        extra: dict[str, Any] = {"score_source": mode}
        if mode == "heuristic":
            extra["heuristic"] = cfg.heuristic
        if stage.decontam is not None:
            extra["decontamination"] = stage.decontam.summary()
        if info is not None:
            extra["judge_teacher"] = info
        return run_shards(stage, ds, out, ctx, shard_rows=shard_rows, limit=limit, manifest_extra=extra)
