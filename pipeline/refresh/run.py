"""`refresh()`: the nightly job. One function per step, in the order they run.

    lock          <publish_dir>/.refresh.lock; another refresh holding it -> Locked (exit 6)
    new run       <workdir>/refresh-YYYYMMDD-HHMMSS/, seed from (run seed, date, previous version)
    ping          one tiny request; no answer -> TeacherUnavailable (exit 4)
    generate      the plan's generation stages under the night's budget (teacher/budget.py)
    dedup         known ids, MinHash and semdedup against the published pool, then score, and select
                  with the published rows counting as already selected (select.against)
    publish       pool = previous pool + tonight's rows; export; publish() switches `latest`
    summary       refresh_summary.json in the run folder, on every path

Outcomes (exit codes): 0 a new version is published (also when the budget
ran out part way: what was made within it is published, and the summary
says budget.exhausted); 8 nothing new survived dedup and selection; 7 the
budget ran out and nothing new could be published; 4 teacher unavailable;
6 locked; 3 data error; 2 config error; 5 write failed.

The seed: a night's seed is derived from [run] seed, the UTC date and the
previous published version, so every night (and a second publish on the same
day) samples new rows, while a rerun after a failed night reuses the seed and
so the response cache: it pays only for what the failed run never got.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from ..config import Config, stage_config
from ..context import RunPaths, make_context
from ..errors import DatasetError, TeacherUnavailable
from ..store import Dataset
from ..teacher.base import ChatRequest, Sampling
from ..teacher.budget import Budget
from ..teacher.factory import TeacherFactory
from . import publish as pub
from .config import RefreshConfig
from .lock import RunLock
from .naming import new_run_id, night_seed
from .summary import EXIT_BUDGET, EXIT_NOTHING_NEW, EXIT_PUBLISHED, FILE, Summary

GENERATION = ("self_instruct", "evol_instruct", "orca")
AFTER = ("minhash", "semdedup", "score", "select")   # plan stages run on tonight's rows after known_ids
LOCK_FILE = ".refresh.lock"


@dataclass
class RefreshResult:
    status: str          # published | nothing_new | budget_exhausted
    exit_code: int
    message: str
    run_id: str
    version: str | None
    summary: dict[str, Any]


def refresh_settings(cfg: Config, **overrides: Any) -> RefreshConfig:
    return stage_config(cfg, "refresh", RefreshConfig, **overrides)


def publish_dir_of(cfg: Config, rcfg: RefreshConfig) -> Path:
    return Path(rcfg.publish_dir) if rcfg.publish_dir else Path(cfg.run.workdir) / "release"


def refresh(cfg: Config, *, publish_dir: Path | None = None, seed: int | None = None,
            max_rows: int | None = None, max_tokens: int | None = None, max_seconds: float | None = None,
            keep: int | None = None, progress: bool = True, echo: Callable[[str], None] = print,
            backend: Any = None, now: datetime | None = None) -> RefreshResult:
    """Run one nightly refresh; returns the outcome (0, 7, 8) or raises the error (exit 2-6).

    `backend` replaces the configured teacher backend (tests pass a scripted
    one); `now` replaces the clock that names the run and derives the seed.
    """
    rcfg = refresh_settings(cfg, publish_dir=str(publish_dir) if publish_dir else None, keep_versions=keep,
                            max_rows=max_rows, max_tokens=max_tokens, max_seconds=max_seconds)
    out = publish_dir_of(cfg, rcfg)
    out.mkdir(parents=True, exist_ok=True)
    lock = RunLock(out / LOCK_FILE).acquire()
    try:
        if lock.took_over:
            echo(f"[refresh] took over the lock of pid {lock.took_over.get('pid')}, which died without releasing it")
        return _Night(cfg, rcfg, out, seed=seed, progress=progress, echo=echo, backend=backend,
                      now=now or datetime.now(timezone.utc)).run()
    finally:
        lock.release()


class _Night:
    def __init__(self, cfg: Config, rcfg: RefreshConfig, publish_dir: Path, *, seed: int | None, progress: bool,
                 echo: Callable[[str], None], backend: Any, now: datetime):
        self.rcfg, self.pub, self.progress, self.echo, self.backend = rcfg, publish_dir, progress, echo, backend
        self.workdir = Path(cfg.run.workdir)
        self.previous = pub.latest(publish_dir)
        self.prev_pool = self.previous / "pool" if self.previous else None
        self.run_id = new_run_id(self.workdir, publish_dir, now)
        self.seed_source = "--seed" if seed is not None else "derived"
        self.seed = seed if seed is not None else night_seed(
            cfg.run.seed, now.date(), self.previous.name if self.previous else None)
        self.base_seed = cfg.run.seed
        # Tonight's config: the night's seed and run, the rows budget as every stage's input limit.
        self.cfg = cfg.model_copy(deep=True)
        self.cfg.source = cfg.source
        self.cfg.run.seed, self.cfg.run.run_id = self.seed, self.run_id
        if rcfg.max_rows is not None:
            self.cfg.run.limit = min(rcfg.max_rows, cfg.run.limit or rcfg.max_rows)
        self.paths = RunPaths(self.workdir, self.run_id)
        # The publish step's config, checked now rather than after a night of generation.
        from ..stages.export.config import ExportConfig
        self.export_cfg = stage_config(self.cfg, "export", ExportConfig, heldout_stable=True)
        self.skip = set(cfg.pipeline.get("skip", []))
        self.budget: Budget | None = None
        self.ctx = None
        self.staging: Path | None = None

    # -- the night ----------------------------------------------------------------
    def run(self) -> RefreshResult:
        self.paths.run_dir.mkdir(parents=True)
        self.summary = Summary(self.paths.run_dir / FILE, run_id=self.run_id, seed=self.seed,
                               seed_source=self.seed_source, publish_dir=str(self.pub),
                               previous_version=self.previous.name if self.previous else None,
                               config=self.cfg.source, settings=self.rcfg.model_dump())
        self.echo(f"[refresh] run {self.run_id} (seed {self.seed}) -> {self.paths.run_dir}; "
                  f"publishing to {self.pub} (latest: {self.previous.name if self.previous else 'none'})")
        published = False
        try:
            self._clean_staging()
            if self.prev_pool is not None and not (self.prev_pool / "_manifest.json").exists():
                raise DatasetError(f"{self.previous}: the published version has no pool/ (was it published by "
                                   "`distill refresh`?); point [refresh] publish_dir at a refresh release folder")
            self._ping()
            current = self._generate()
            current = self._dedup_and_select(current)
            rows = Dataset(current).num_rows() if current is not None else 0
            self.summary.data["rows"]["selected"] = rows
            if rows == 0:
                return self._nothing()
            result = self._publish(current)
            published = True
            return result
        except BaseException as e:
            self.summary.fail(e)
            raise
        finally:
            self._close()
            if not published and self.staging is not None:
                shutil.rmtree(self.staging, ignore_errors=True)
            self.summary.write()

    def _close(self) -> None:
        if self.ctx is not None:
            shared = self.budget.shared  # its ledger counted every Ray worker's tokens too
            self.summary.add_teacher(self.ctx.teacher.stats.to_dict() if self.ctx.has_teacher else {},
                                     self.budget.split if shared else None,
                                     self.rcfg.prompt_cost_per_million, self.rcfg.completion_cost_per_million)
            self.ctx.close()
            self.ctx = None
        if self.budget is not None:
            self.summary.data["budget"] = self.budget.to_dict()
            self.budget.close()

    def _clean_staging(self) -> None:
        """Half-built versions of runs that died: we hold the lock, so nobody is building them."""
        d = self.pub / pub.VERSIONS
        for p in d.glob(".staging-*") if d.is_dir() else []:
            shutil.rmtree(p, ignore_errors=True)

    # -- ping ---------------------------------------------------------------------
    def _ping(self) -> None:
        section = self.cfg.teacher
        factory = TeacherFactory(section, self.workdir.resolve(), self.seed)
        t0 = time.monotonic()
        if self.backend is not None:
            inner = self.backend
        elif section.backend == "openai":
            # A network teacher is pinged by its own short-lived client that fails fast;
            # the run's client keeps the configured retries.
            probe = factory.with_section(max_retries=min(section.max_retries, 2),
                                         timeout_s=min(section.timeout_s, 60.0)).backend()
            try:
                self._ask(probe)
            finally:
                probe.close()
            inner = factory.backend()
        else:
            inner = factory.backend()  # loaded once for the night
        try:
            if section.backend != "openai" or self.backend is not None:
                self._ask(inner)
        except BaseException:
            inner.close()
            raise
        latency = time.monotonic() - t0
        self.summary.data["teacher"] = {"backend": inner.backend, "model": inner.model,
                                        "ping": {"seconds": round(latency, 3), "stats": inner.stats.to_dict()}}
        self.echo(f"[refresh] teacher {inner.backend} {inner.model} answered the ping in {latency:.1f}s")
        r = self.rcfg
        try:
            self.ctx = make_context(self.cfg, self.paths, progress=self.progress)
            # on Ray the workers build their own teachers: the executor's budget is one ledger for all
            self.budget = self.ctx.executor.budget(r.max_tokens, max_seconds=r.max_seconds, max_rows=r.max_rows)
        except BaseException:
            inner.close()
            raise
        factory = factory.with_budget(self.budget)
        teacher = factory.build(inner)
        # Stages running here use the pinged backend; Ray workers build theirs from the factory. The
        # generation stages' own caps are children of the night's budget.
        self.ctx.teacher_factory, self.ctx.budget, self.ctx.teacher = factory, self.budget, teacher

    def _ask(self, teacher: Any) -> None:
        where = f" at {self.cfg.teacher.base_url}" if self.cfg.teacher.backend == "openai" else ""
        [c] = teacher.chat([ChatRequest(messages=[{"role": "user", "content": "Reply with the word: ready"}],
                                        sampling=Sampling(temperature=0.0, max_tokens=self.rcfg.ping_max_tokens),
                                        record_id=self.run_id, purpose="refresh:ping")])
        if c.error is not None:
            raise TeacherUnavailable(f"{teacher.backend} teacher{where} did not answer the ping: "
                                     f"{c.error.kind}: {c.error.message}")

    # -- stages -------------------------------------------------------------------
    def _sent_tokens(self) -> int:
        """Tokens sent so far: the shared ledger's on Ray (workers included), else the driver teacher's."""
        if self.budget.shared:
            return self.budget.tokens
        used = self.ctx.teacher.stats if self.ctx.has_teacher else None
        return used.prompt_tokens + used.completion_tokens if used is not None else 0

    def _step(self, name: str, fn: Callable[[], dict[str, Any]], input: Path | None, out: Path) -> dict[str, Any]:
        before = self._sent_tokens()
        self.echo(f"[refresh] {name} -> {out}")
        t0 = time.monotonic()
        m = fn()
        tokens = self._sent_tokens() - before
        entry = {"stage": name, "status": "done", "seconds": round(time.monotonic() - t0, 3), "out": str(out),
                 "input_rows": Dataset(input).num_rows() if input is not None else None,
                 "rows_in": m.get("rows_in"), "rows_out": m.get("rows_out"), "rows_rejected": m.get("rows_rejected"),
                 "drops": m.get("drops", {}), "teacher_tokens": tokens}
        self.summary.add_stage(entry)
        self.echo(f"[refresh] {name}: {m.get('rows_out')} rows out, {m.get('rows_rejected', 0)} dropped "
                  f"in {entry['seconds']:.1f}s")
        return m

    def _plan_steps(self) -> dict[str, Any]:
        from ..plan import default_plan
        return {s.name: s for s in default_plan()}

    def _generate(self) -> Path | None:
        steps = self._plan_steps()
        current: Path | None = None
        limit = self.cfg.run.limit
        for name in GENERATION:
            if name not in steps or name in self.skip:
                self.summary.add_stage({"stage": name, "status": "skipped"})
                continue
            capped = name == "self_instruct" and self._cap_target()
            out = self.paths.stage_dir(name)
            step = steps[name]
            m = self._step(name, lambda: step.run_step(self.cfg, current, out, self.ctx), current, out)
            if self.rcfg.max_rows is not None and current is not None and Dataset(current).num_rows() > limit:
                self.budget.note("rows")   # rows of the previous stage were left unread
            if capped and m.get("stop_reason") == "target_reached":
                self.budget.note("rows")
            current = out
        self.summary.data["rows"]["generated"] = Dataset(current).num_rows() if current is not None else 0
        return current

    def _cap_target(self) -> bool:
        """The rows budget caps the self-instruct target; True when it did."""
        from ..stages.self_instruct import SelfInstructConfig
        if self.rcfg.max_rows is None:
            return False
        if stage_config(self.cfg, "self_instruct", SelfInstructConfig).num_instructions <= self.rcfg.max_rows:
            return False
        self.cfg.self_instruct = {**self.cfg.self_instruct, "num_instructions": self.rcfg.max_rows}
        return True

    def _dedup_and_select(self, current: Path | None) -> Path | None:
        from .known import drop_known_ids

        if current is None or Dataset(current).num_rows() == 0:
            return None
        version = self.previous.name if self.previous else None
        out = self.paths.stage_dir("known_ids")
        src = current
        m = self._step("known_ids", lambda: drop_known_ids(src, out, self.prev_pool, version=version,
                                                           run_id=self.run_id, shard_rows=self.cfg.run.shard_rows),
                       current, out)
        self.summary.data["rows"]["after_dedup"] = m["rows_out"]
        current = out
        if self.prev_pool is not None:
            # Incremental modes against the published pool; never register tonight's rows there.
            from ..stages.minhash import MinhashConfig
            from .pool import signature_view
            fmt = stage_config(self.cfg, "minhash", MinhashConfig).signature_format()
            view = signature_view(self.prev_pool, fmt, self.paths.stage_dir("minhash_against"))
            against = [*self.cfg.minhash.get("against", []), str(view)]
            self.cfg.minhash = {**self.cfg.minhash, "against": against, "add_to_against": False}
            self.cfg.semdedup = {**self.cfg.semdedup, "against": str(self.prev_pool)}
            # the published rows count as already selected: tonight's picks stay diverse against them too
            self.cfg.select = {**self.cfg.select, "against": str(self.prev_pool)}
        steps = self._plan_steps()
        for name in AFTER:
            if Dataset(current).num_rows() == 0:
                self.summary.add_stage({"stage": name, "status": "not run: no rows left"})
                continue
            if name not in steps or name in self.skip:
                self.summary.add_stage({"stage": name, "status": "skipped"})
                continue
            out, step, src = self.paths.stage_dir(name), steps[name], current
            m = self._step(name, lambda: step.run_step(self.cfg, src, out, self.ctx), src, out)
            if name in ("minhash", "semdedup"):
                self.summary.data["rows"]["after_dedup"] = m.get("rows_out")
            current = out
        return current

    # -- outcomes -----------------------------------------------------------------
    def _nothing(self) -> RefreshResult:
        rows = self.summary.data["rows"]
        if self.budget is not None and self.budget.exhausted:
            status, code = "budget_exhausted", EXIT_BUDGET
            msg = (f"budget exhausted ({', '.join(self.budget.hit)}) before any new row could be published: "
                   f"{rows.get('generated', 0)} rows generated, none new after dedup and selection; "
                   f"latest stays {self.previous.name if self.previous else 'unpublished'}")
        else:
            status, code = "nothing_new", EXIT_NOTHING_NEW
            msg = (f"nothing new: {rows.get('generated', 0)} rows generated, none left after dedup against "
                   f"{self.previous.name if self.previous else 'an empty release'} and selection; no version published")
        self.summary.finish(status, code, msg)
        return RefreshResult(status, code, msg, self.run_id, None, self.summary.data)

    def _publish(self, current: Path) -> RefreshResult:
        from ..stages.export.stage import run_export
        from ..stages.minhash import MinhashConfig
        from .pool import build_pool

        version = self.run_id
        t0 = time.monotonic()
        self.staging = pub.staging_dir(self.pub, version)
        sem = self.paths.stage_dir("semdedup")
        pm = build_pool(self.staging / "pool", self.prev_pool, current, version=version, run_id=self.run_id,
                        minhash_format=stage_config(self.cfg, "minhash", MinhashConfig).signature_format(),
                        embeddings_from=sem if (sem / "_manifest.json").exists() else None,
                        make_encoder=self._encoder, shard_rows=max(self.cfg.run.shard_rows, 1))
        # Held-out rows by their own hash draw: a row never moves between splits from one version to the next.
        ecfg = self.export_cfg
        if ecfg.pretty_name is None:
            ecfg = ecfg.model_copy(update={"pretty_name": self.pub.resolve().name})
        # The base seed, not the night's: a row's held-out draw must not change from night to night.
        em = run_export(self.staging / "pool", self.staging, ecfg, seed=self.base_seed, run_id=self.run_id,
                        progress=self.progress)
        final = pub.publish(self.pub, version, self.staging, keep=self.rcfg.keep_versions)
        self.staging = None
        rows = self.summary.data["rows"]
        rows.update(added=pm["rows_added"], pool_before=pm["rows_carried"], pool_after=pm["rows_out"],
                    released=em["rows"])
        self.summary.add_stage({"stage": "publish", "status": "done", "seconds": round(time.monotonic() - t0, 3),
                                "out": str(final), "rows_in": pm["rows_out"], "rows_out": em["rows"],
                                "rows_rejected": 0, "drops": {}})
        self.summary.data["version"] = version
        budget = f"; budget exhausted ({', '.join(self.budget.hit)}), published what was made" \
            if self.budget.exhausted else ""
        msg = (f"published {version}: {pm['rows_added']} new rows, {pm['rows_out']} in the pool, "
               f"{em['rows']} released -> {self.pub / pub.LATEST}{budget}")
        self.summary.finish("published", EXIT_PUBLISHED, msg)
        return RefreshResult("published", EXIT_PUBLISHED, msg, self.run_id, version, self.summary.data)

    def _encoder(self):
        """The semdedup embedder (through its cache), for pool rows whose stored embeddings cannot be reused."""
        from ..embeddings.encoder import make_encoder
        from ..stages.semdedup import SemdedupConfig
        return make_encoder(stage_config(self.cfg, "semdedup", SemdedupConfig), self.workdir)
