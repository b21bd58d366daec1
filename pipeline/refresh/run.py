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

import hashlib
import shutil
import time
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Callable

from ..config import Config, stage_config
from ..context import RunPaths, make_context
from ..embeddings.encoder import make_encoder
from ..plan import check_first_input, check_steps, default_plan
from ..stage import Manifest
from ..stages.export import ExportConfig, run_export
from ..stages.minhash import MinhashConfig
from ..stages.self_instruct import SelfInstructConfig
from ..stages.semdedup import SemdedupConfig
from ..store import Dataset, RunLock
from ..teacher import ping
from ..teacher.base import TeacherUsage
from ..teacher.factory import BATCH_BACKENDS, TeacherFactory
from ..teacher.pricing import Prices
from . import publish as pub
from .config import RefreshConfig
from .known import drop_known_ids
from .pool import build_pool, pool_of, signature_view
from .summary import EXIT_BUDGET, EXIT_NOTHING_NEW, EXIT_PUBLISHED, FILE, Summary

GENERATION = ("self_instruct", "evol_instruct", "orca")
AFTER = ("minhash", "semdedup", "score", "select")   # plan stages run on tonight's rows after known_ids
LOCK_FILE = ".refresh.lock"


def night_seed(base_seed: int, day: date, previous: str | None) -> int:
    h = hashlib.sha256(f"refresh\x1f{base_seed}\x1f{day.isoformat()}\x1f{previous or ''}".encode()).digest()
    return int.from_bytes(h[:4], "big") & 0x7FFFFFFF


def new_run_id(workdir: Path, publish_dir: Path, now: datetime) -> str:
    """refresh-YYYYMMDD-HHMMSS, with a counter when that name is taken in the workdir or among the versions."""
    base = "refresh-" + now.strftime("%Y%m%d-%H%M%S")
    rid, n = base, 2
    while (workdir / rid).exists() or (publish_dir / pub.VERSIONS / rid).exists():
        rid, n = f"{base}-{n}", n + 1
    return rid


@dataclass
class RefreshResult:
    status: str          # published | nothing_new | budget_exhausted
    exit_code: int
    message: str
    run_id: str
    version: str | None
    summary: dict[str, Any]


def refresh(cfg: Config, *, publish_dir: Path | None = None, seed: int | None = None,
            max_rows: int | None = None, max_tokens: int | None = None, max_seconds: float | None = None,
            max_cost: float | None = None, keep: int | None = None, progress: bool = True, echo: Callable[[str], None] = print,
            backend: Any = None, now: datetime | None = None) -> RefreshResult:
    """Run one nightly refresh; returns the outcome (0, 7, 8) or raises the error (exit 2-6).

    `backend` replaces the configured teacher backend (tests pass a scripted
    one); `now` replaces the clock that names the run and derives the seed.
    """
    rcfg = stage_config(cfg, "refresh", RefreshConfig, publish_dir=str(publish_dir) if publish_dir else None,
                        keep_versions=keep, max_rows=max_rows, max_tokens=max_tokens, max_seconds=max_seconds,
                        max_cost=max_cost)
    if rcfg.max_cost is not None:
        Prices.required(cfg.teacher, "max_cost (--max-cost or [refresh] max_cost)", cfg.source)
    _validate_first(cfg)
    out = Path(rcfg.publish_dir) if rcfg.publish_dir else Path(cfg.run.workdir) / "release"
    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out / LOCK_FILE) as lock:
        if lock.took_over:
            echo(f"[refresh] took over the lock of pid {lock.took_over.get('pid')}, which died without releasing it")
        return _Night(cfg, rcfg, out, seed=seed, progress=progress, echo=echo, backend=backend,
                      now=now or datetime.now(timezone.utc)).run()


def _validate_first(cfg: Config) -> None:
    """Before the lock, the run folder and the ping: the section of every step tonight runs (the ones
    [pipeline] skip names need not be valid) and the publish step's, the files they name, and that the
    first generation step has an input (a skipped self_instruct leaves evol_instruct none)."""
    skip = set(cfg.pipeline.get("skip", []))
    steps = [s for s in default_plan() if s.name not in skip and s.name in (*GENERATION, *AFTER)]
    stage_config(cfg, "export", ExportConfig, heldout_stable=True)
    check_steps(cfg, steps)
    check_first_input([s for s in steps if s.name in GENERATION], None)


class _Night:
    """One night, holding the lock: `run` is the sequence of the module docstring, one method per step."""

    def __init__(self, cfg: Config, rcfg: RefreshConfig, publish_dir: Path, *, seed: int | None, progress: bool,
                 echo: Callable[[str], None], backend: Any, now: datetime):
        self.rcfg, self.pub, self.progress, self.echo, self.backend = rcfg, publish_dir, progress, echo, backend
        self.workdir = Path(cfg.run.workdir)
        self.previous = pub.latest(publish_dir)
        self.prev_name = self.previous.name if self.previous else None
        self.run_id = new_run_id(self.workdir, publish_dir, now)
        self.seed_source = "--seed" if seed is not None else "derived"
        self.seed = seed if seed is not None else night_seed(cfg.run.seed, now.date(), self.prev_name)
        self.base_seed = cfg.run.seed
        # Tonight's config: the night's seed and run, the rows budget as every stage's input limit.
        self.cfg = cfg.model_copy(deep=True)
        self.cfg.source = cfg.source
        self.cfg.run.seed, self.cfg.run.run_id = self.seed, self.run_id
        if rcfg.max_rows is not None:
            self.cfg.run.limit = min(rcfg.max_rows, cfg.run.limit or rcfg.max_rows)
        self.paths = RunPaths(self.workdir, self.run_id)
        # The publish step's config, checked now rather than after a night of generation.
        self.export_cfg = stage_config(self.cfg, "export", ExportConfig, heldout_stable=True)
        if self.export_cfg.pretty_name is None:
            self.export_cfg = self.export_cfg.model_copy(update={"pretty_name": publish_dir.resolve().name})
        skip = set(cfg.pipeline.get("skip", []))
        self.steps = {s.name: s for s in default_plan() if s.name not in skip}
        self.prev_pool = self.ctx = self.budget = self.staging = None

    def run(self) -> RefreshResult:
        self.paths.run_dir.mkdir(parents=True)
        self.summary = Summary(self.paths.run_dir / FILE, run_id=self.run_id, seed=self.seed,
                               seed_source=self.seed_source, publish_dir=str(self.pub),
                               previous_version=self.prev_name, config=self.cfg.source,
                               settings=self.rcfg.model_dump())
        self.echo(f"[refresh] run {self.run_id} (seed {self.seed}) -> {self.paths.run_dir}; "
                  f"publishing to {self.pub} (latest: {self.prev_name or 'none'})")
        try:
            pub.clean_staging(self.pub)
            self.prev_pool = pool_of(self.previous)
            self._ping()
            current = self._dedup(self._generate())
            rows = self.summary.data["rows"]["selected"] = Dataset(current).num_rows() if current is not None else 0
            return self._publish(current) if rows else self._nothing()
        except BaseException as e:
            self.summary.fail(e)
            raise
        finally:
            self._summarize()

    def _ping(self) -> None:
        """One tiny request before any work (teacher/ping.py), then the night's context: its budget, and the
        teacher around the pinged backend (Ray workers build theirs from the factory, on the same budget)."""
        section, t0 = self.cfg.teacher, time.monotonic()
        factory = TeacherFactory(section, self.workdir.resolve(), self.seed)
        probed = self.backend is None and section.backend in ping.NETWORK_BACKENDS
        if probed:
            # A network teacher is pinged by its own short-lived client that fails fast;
            # the run's client keeps the configured retries.
            self._ask(lambda **kw: ping.probe(section, seed=self.seed, workdir=self.workdir.resolve(), **kw))
        inner = self.backend if self.backend is not None else factory.backend()  # loaded once for the night
        try:
            if not probed:
                self._ask(lambda **kw: ping.ask(inner, section, **kw))
            latency = time.monotonic() - t0
            self.summary.data["teacher"] = {"backend": inner.backend, "model": inner.model,
                                            "ping": {"seconds": round(latency, 3), "stats": inner.stats.to_dict()}}
            self.echo(f"[refresh] teacher {inner.backend} {inner.model} answered the ping in {latency:.1f}s")
            self.ctx = make_context(self.cfg, self.paths, progress=self.progress)
            r = self.rcfg
            self.budget = self.ctx.executor.budget(r.max_tokens, max_seconds=r.max_seconds, max_rows=r.max_rows)
            self.budget.cap_cost(r.max_cost, Prices.of(self.cfg.teacher), batch=self.cfg.teacher.backend in BATCH_BACKENDS)
        except BaseException:
            inner.close()
            raise
        factory = factory.with_budget(self.budget)
        self.ctx.teacher_factory, self.ctx.budget, self.ctx.teacher = factory, self.budget, factory.build(inner)

    def _ask(self, send: Callable[..., Any]) -> None:
        send(max_tokens=self.rcfg.ping_max_tokens, record_id=self.run_id, purpose="refresh:ping")

    def _generate(self) -> Path | None:
        """The plan's generation stages under the budget; the rows budget caps each one's input rows
        and the self-instruct target."""
        current: Path | None = None
        for name in GENERATION:
            if not self._runs(name):
                continue
            capped = name == "self_instruct" and self._cap_target()
            m = self._step(name, current)
            unread = self.rcfg.max_rows is not None and current is not None \
                and Dataset(current).num_rows() > self.cfg.run.limit   # rows of the previous stage left unread
            if unread or capped and m.get("stop_reason") == "target_reached":
                self.budget.note("rows")
            current = self.paths.stage_dir(name)
        self.summary.data["rows"]["generated"] = Dataset(current).num_rows() if current is not None else 0
        return current

    def _cap_target(self) -> bool:
        """The rows budget caps the self-instruct target; True when it did. (Self-Instruct reads no rows cap
        from `ctx.budget`: its target is what its manifest and its resume check record.)"""
        target = stage_config(self.cfg, "self_instruct", SelfInstructConfig).num_instructions
        if self.rcfg.max_rows is None or target <= self.rcfg.max_rows:
            return False
        self.cfg.self_instruct = {**self.cfg.self_instruct, "num_instructions": self.rcfg.max_rows}
        return True

    def _dedup(self, current: Path | None) -> Path | None:
        """Known ids, then MinHash, semdedup, score and select, each against the published pool."""
        if current is None or Dataset(current).num_rows() == 0:
            return None
        m = self._step("known_ids", current, lambda out: drop_known_ids(
            current, out, self.prev_pool, version=self.prev_name, run_id=self.run_id,
            shard_rows=self.cfg.run.shard_rows))
        self.summary.data["rows"]["after_dedup"] = m["rows_out"]
        current = self.paths.stage_dir("known_ids")
        against = self._against()
        for name in AFTER:
            if Dataset(current).num_rows() == 0:
                self.summary.add_stage({"stage": name, "status": "not run: no rows left"})
            elif self._runs(name):
                self.ctx.against = against.get(name, ())
                m = self._step(name, current)
                if name in ("minhash", "semdedup"):
                    self.summary.data["rows"]["after_dedup"] = m.get("rows_out")
                current = self.paths.stage_dir(name)
        return current

    def _against(self) -> dict[str, tuple[str, ...]]:
        """Each dedup stage's `ctx.against`: the published pool (for select its rows count as already
        selected), for MinHash as signatures in tonight's format. Tonight's rows are never added to it."""
        if self.prev_pool is None:
            return {}
        fmt = stage_config(self.cfg, "minhash", MinhashConfig).signature_format()
        view = signature_view(self.prev_pool, fmt, self.paths.stage_dir("minhash_against"))
        return {"minhash": (str(view),), "semdedup": (str(self.prev_pool),), "select": (str(self.prev_pool),)}

    def _publish(self, current: Path) -> RefreshResult:
        """pool = previous pool + tonight's rows; the export of it becomes the new version, then `latest`."""
        t0 = time.monotonic()
        version, self.staging = self.run_id, pub.staging_dir(self.pub, self.run_id)
        sem = self.paths.stage_dir("semdedup")
        pm = build_pool(self.staging / "pool", self.prev_pool, current, version=version, run_id=self.run_id,
                        minhash_format=stage_config(self.cfg, "minhash", MinhashConfig).signature_format(),
                        embeddings_from=sem if (sem / "_manifest.json").exists() else None,
                        make_encoder=lambda: make_encoder(stage_config(self.cfg, "semdedup", SemdedupConfig),
                                                          self.workdir),
                        shard_rows=max(self.cfg.run.shard_rows, 1))
        # Held-out rows by their own hash draw, from the base seed, not the night's: a row never moves
        # between splits from one version to the next.
        em = run_export(self.staging / "pool", self.staging, self.export_cfg, seed=self.base_seed,
                        run_id=self.run_id, progress=self.progress)
        final = pub.publish(self.pub, version, self.staging, keep=self.rcfg.keep_versions)
        self.staging = None
        self.summary.data["rows"].update(added=pm["rows_added"], pool_before=pm["rows_carried"],
                                         pool_after=pm["rows_out"], released=em["rows"])
        self.summary.add_stage({"stage": "publish", "status": "done", "seconds": round(time.monotonic() - t0, 3),
                                "out": str(final), "rows_in": pm["rows_out"], "rows_out": em["rows"],
                                "rows_rejected": 0, "drops": {}})
        budget = f"; budget exhausted ({', '.join(self.budget.hit)}), published what was made" \
            if self.budget.exhausted else ""
        return self._finish("published", EXIT_PUBLISHED, f"published {version}: {pm['rows_added']} new rows, "
                            f"{pm['rows_out']} in the pool, {em['rows']} released -> {self.pub / pub.LATEST}{budget}",
                            version)

    def _nothing(self) -> RefreshResult:
        generated = self.summary.data["rows"].get("generated", 0)
        if self.budget.exhausted:
            return self._finish("budget_exhausted", EXIT_BUDGET, f"budget exhausted ({', '.join(self.budget.hit)}) "
                                f"before any new row could be published: {generated} rows generated, none new "
                                f"after dedup and selection; latest stays {self.prev_name or 'unpublished'}")
        return self._finish("nothing_new", EXIT_NOTHING_NEW, f"nothing new: {generated} rows generated, none left "
                            f"after dedup against {self.prev_name or 'an empty release'} and selection; "
                            "no version published")

    def _summarize(self) -> None:
        """On every path: the teacher's work and the budget into refresh_summary.json; the night's teacher
        and executor closed, a version staged but not published removed."""
        if self.ctx is not None:
            shared = self.budget is not None and self.budget.shared  # its ledger counted every Ray worker too
            self.summary.add_teacher(self.ctx.teacher.stats if self.ctx.has_teacher else TeacherUsage(),
                                     self.budget.split if shared else None,
                                     self.rcfg.prompt_cost_per_million, self.rcfg.completion_cost_per_million)
            self.ctx.close()
        if self.budget is not None:
            self.summary.data["budget"] = self.budget.to_dict()
            self.budget.close()
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
        self.summary.write()

    def _runs(self, name: str) -> bool:
        """Whether the plan runs `name` tonight; a skipped stage is recorded as such."""
        if name not in self.steps:
            self.summary.add_stage({"stage": name, "status": "skipped"})
        return name in self.steps

    def _step(self, name: str, input: Path | None, run: Callable[[Path], Manifest] | None = None) -> Manifest:
        """Stage `name` (the plan's, or `run(out)`) from `input` into the run folder, recorded in the summary."""
        out = self.paths.stage_dir(name)
        before, t0 = self._sent_tokens(), time.monotonic()
        self.echo(f"[refresh] {name} -> {out}")
        m = run(out) if run is not None else self.steps[name].run_step(self.cfg, input, out, self.ctx)
        entry = self.summary.add_step(name, m, out, time.monotonic() - t0, self._sent_tokens() - before,
                                      Dataset(input).num_rows() if input is not None else None)
        self.echo(f"[refresh] {name}: {m.get('rows_out')} rows out, {m.get('rows_rejected', 0)} dropped "
                  f"in {entry['seconds']:.1f}s")
        return m

    def _sent_tokens(self) -> int:
        """Tokens sent so far: the shared ledger's on Ray (workers included), else the driver teacher's."""
        if self.budget.shared:
            return self.budget.tokens
        return self.ctx.teacher.stats.prompt_tokens + self.ctx.teacher.stats.completion_tokens

    def _finish(self, status: str, code: int, msg: str, version: str | None = None) -> RefreshResult:
        self.summary.finish(status, code, msg, version)
        return RefreshResult(status, code, msg, self.run_id, version, self.summary.data)
