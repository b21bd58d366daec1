"""The cost planner behind `distill plan`: a small pilot of the configured stages, measured and projected.

Reads the run config and the pilot's folder, `<workdir>/pilot-<fingerprint>/`
(an ordinary run folder: each stage's manifest and `run_summary.json`);
writes that folder (the pilot runs through `run_plan`, so it resumes and
skips finished stages like any run) and `<pilot>/projection.json`, which
`distill report` shows.

The pilot is the config itself at a small size: `pilot_rows` new
instructions when Self-Instruct runs first, else the first `pilot_rows`
input rows (`run.limit`). Its fingerprint covers the whole config, the size
and the input, so a pilot already made for the same config is reused
without a request. It keeps its answers in its own response cache
(`<pilot>/teacher_cache.sqlite`): every request of a first pilot is sent and
its tokens counted, and a rerun of it costs nothing.

The projection chains the stages: stage k's rows in are stage k-1's rows
out; its requests, tokens, seconds and rows out are the pilot's per row in,
times its projected rows in (select's `budget`, lifted in the pilot, caps
its rows out). Wall time is the pilot's seconds per row of each stage at the
same concurrency (`teacher.concurrency` requests in flight), at least the
`rpm`/`tpm` limits' floor; cost is the `[teacher]` prices online, and with
`batch_discount` off for batch, each also per kept (final) row.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from . import marginal
from .config import Config
from .context import RunPaths
from .errors import ConfigError, DatasetError, InputFileError
from .plan import default_plan, optional_off
from .runplan import run_plan
from .store import Dataset, atomic_write_json, fingerprint, read_json
from .teacher.pricing import Prices

TIERS = {"100k": 100_000, "1m": 1_000_000, "10m": 10_000_000}
PROJECTION = "projection.json"
PILOT = "pilot.json"


@dataclass
class StageMeasure:
    """One stage of the pilot: its rows in (for Self-Instruct first: its target) and what it took."""

    stage: str
    rows_in: float
    rows_out: float
    requests: float = 0
    prompt_tokens: float = 0
    completion_tokens: float = 0
    seconds: float = 0.0
    fixed_rows: float = 0  # rows out that do not grow with the size: Self-Instruct's seeds (include_seeds)

    @property
    def tokens(self) -> float:
        return self.prompt_tokens + self.completion_tokens

    @property
    def yield_(self) -> float | None:
        return self.rows_out / self.rows_in if self.rows_in else None


def target_rows(rows: int | None, tier: str | None) -> int:
    if (rows is None) == (tier is None):
        raise ConfigError("distill plan: give the target size as --rows N or --tier " + "|".join(TIERS) + " (one of them)")
    if tier is not None:
        if tier.lower() not in TIERS:
            raise ConfigError(f"--tier {tier}: unknown tier; tiers are {', '.join(TIERS)}")
        return TIERS[tier.lower()]
    return int(rows)


def self_first(cfg: Config, skip: list[str], input: Path | None) -> bool:
    return input is None and "self_instruct" not in skip


def pilot_fingerprint(cfg: Config, pilot_rows: int, skip: list[str], input: Path | None) -> str:
    """Covers everything that changes the pilot's answers or yields; not the run id, not the prices."""
    dump = cfg.model_dump(mode="json")
    for key in ("run_id", "limit", "workdir"):  # the pilot sets its own; it lives in the workdir
        dump["run"].pop(key, None)
    for key in ("cache_path", "price_prompt_per_mtok", "price_completion_per_mtok", "batch_discount"):
        dump["teacher"].pop(key, None)  # new prices reprice the same pilot
    src = {"config": dump, "pilot_rows": pilot_rows, "skip": sorted(skip),
           "input": None if input is None else [str(Path(input).resolve()), fingerprint(Dataset(input))]}
    return hashlib.sha256(json.dumps(src, sort_keys=True, default=str).encode()).hexdigest()[:12]


def pilot_config(cfg: Config, pilot_dir: Path, pilot_rows: int, first_self: bool) -> Config:
    """The config at pilot size, with its own run folder and response cache, select's budget lifted."""
    p = cfg.model_copy(deep=True)
    p.source = cfg.source
    p.run.run_id = pilot_dir.name
    if first_self:
        p.run.limit = None
        p.self_instruct = {**p.self_instruct, "num_instructions": pilot_rows}
    else:
        p.run.limit = pilot_rows
    p.select = {k: v for k, v in p.select.items() if k != "budget"}  # a fixed budget would hide the yield
    p.teacher.cache_path = str((pilot_dir / "teacher_cache.sqlite").resolve())
    return p


def run_pilot(cfg: Config, pilot_rows: int, *, input: Path | None = None, skip: list[str] | None = None,
              progress: bool = True, echo: Callable[[str], None] = print) -> tuple[Path, bool]:
    """The pilot's folder, made now or (True) reused: one whose pilot.json has this fingerprint (written when
    the pilot finished, or ended early because a stage kept no rows: what follows it has nothing to do)."""
    skip = list(skip or []) + list(cfg.pipeline.get("skip", [])) + optional_off(cfg, default_plan())
    fp = pilot_fingerprint(cfg, pilot_rows, skip, input)
    paths = RunPaths(Path(cfg.run.workdir), f"pilot-{fp}")
    pilot_dir = paths.run_dir
    marker = pilot_dir / PILOT
    if marker.exists() and read_json(marker).get("fingerprint") == fp:
        return pilot_dir, True
    first_self = self_first(cfg, skip, input)
    pcfg = pilot_config(cfg, pilot_dir, pilot_rows, first_self)
    pilot_dir.mkdir(parents=True, exist_ok=True)
    echo(f"[plan] pilot of {pilot_rows} rows -> {pilot_dir}")
    order = [s.name for s in default_plan() if s.name not in skip]
    ended = None
    try:
        run_plan(pcfg, paths, skip=skip, input=input, progress=progress, echo=echo)
    except (DatasetError, InputFileError) as e:
        emptied = [m.stage for m in measure_folders(pilot_dir, order, first_self, pilot_rows) if not m.rows_out]
        if not emptied:
            raise
        ended = f"{emptied[0]} kept no rows, so the pilot stopped ({e})"
        echo(f"[plan] {ended}; a larger --pilot-rows measures the stages after it")
    atomic_write_json(marker, {"fingerprint": fp, "pilot_rows": pilot_rows, "self_instruct_first": first_self,
                               "stages": order, "ended": ended, "config": cfg.source,
                               "input": None if input is None else str(input)})
    return pilot_dir, False


def measure(pilot_dir: Path) -> list[StageMeasure]:
    """Each stage the pilot finished, in order (see `measure_folders`)."""
    info = read_json(pilot_dir / PILOT)
    return measure_folders(pilot_dir, info["stages"], info["self_instruct_first"], info["pilot_rows"])


def measure_folders(pilot_dir: Path, order: list[str], first_self: bool, pilot_rows: int) -> list[StageMeasure]:
    """The stages of `order` with a manifest in `pilot_dir`, up to the first without: rows in and out,
    teacher requests and tokens (the shard markers, summed in the manifest; Self-Instruct counts its
    requests as `requests`) and seconds (run_summary.json, else the manifest's own count)."""
    summary = pilot_dir / "run_summary.json"
    seconds = {s["stage"]: s.get("seconds") for s in read_json(summary).get("steps", [])} if summary.exists() else {}
    out: list[StageMeasure] = []
    for name in order:
        folder = pilot_dir / name
        manifest = folder / "_manifest.json"
        release = folder / "manifest.json"  # export writes a release
        if not manifest.exists() and not release.exists():
            break
        m = read_json(manifest if manifest.exists() else release)
        totals = m.get("totals", {})
        rows_out = m.get("rows_out", m.get("rows", 0))
        rows_in = m.get("rows_in", out[-1].rows_out if out else 0)
        if not out and first_self:
            rows_in = pilot_rows  # Self-Instruct's size is its target, not its seed tasks
        secs = seconds.get(name) or m.get("wall_seconds_this_invocation") or m.get("seconds") or 0.0
        fixed = _seed_rows(folder) if not out and first_self else 0
        out.append(StageMeasure(name, float(rows_in or 0), float(rows_out or 0), float(totals.get("teacher_requests", totals.get("requests", 0))),
                                float(totals.get("teacher_prompt_tokens", 0)),
                                float(totals.get("teacher_completion_tokens", 0)), float(secs), float(fixed)))
    return out


def _seed_rows(folder: Path) -> int:
    if not (folder / "_manifest.json").exists():
        return 0
    return sum(sum(1 for o in b.column(0).to_pylist() if o == "seed")
               for b in Dataset(folder).iter_batches(columns=["origin"]))


def project(measures: list[StageMeasure], rows: int, section: Any, *, select_budget: int | None = None) -> dict[str, Any]:
    """The whole run at `rows` from the pilot's measures, priced with `section`'s prices (when it has them)."""
    stages: list[dict[str, Any]] = []
    units = float(rows)
    for m in measures:
        scale = units / m.rows_in if m.rows_in else 0.0
        kept = (m.rows_out - m.fixed_rows) * scale + m.fixed_rows
        if m.stage == "select" and select_budget is not None:
            kept = min(kept, float(select_budget))
        stages.append({"stage": m.stage, "pilot": asdict(m), "yield": m.yield_, "rows_in": units, "rows_out": kept,
                       "requests": m.requests * scale, "prompt_tokens": m.prompt_tokens * scale,
                       "completion_tokens": m.completion_tokens * scale, "seconds": m.seconds * scale})
        units = kept
    kept_rows = units if measures else 0.0
    prompt = sum(s["prompt_tokens"] for s in stages)
    completion = sum(s["completion_tokens"] for s in stages)
    requests = sum(s["requests"] for s in stages)
    seconds = sum(s["seconds"] for s in stages)
    floor = 0.0  # the rate limits' lower bound on the teacher's share
    if section.rpm:
        floor = max(floor, requests / section.rpm * 60)
    if section.tpm:
        floor = max(floor, (prompt + completion) / section.tpm * 60)
    seconds = max(seconds, floor)
    prices = Prices.of(section)
    cost = None
    if prices is not None:
        online, batch = prices.cost(prompt, completion), prices.cost(prompt, completion, batch=True)
        cost = {"prices": prices.to_dict(), "online": online, "batch": batch,
                "online_per_kept_row": online / kept_rows if kept_rows else None,
                "batch_per_kept_row": batch / kept_rows if kept_rows else None}
    return {"target_rows": rows, "kept_rows": kept_rows, "requests": requests, "prompt_tokens": prompt,
            "completion_tokens": completion, "tokens": prompt + completion,
            "requests_per_kept_row": requests / kept_rows if kept_rows else None,
            "wall_seconds": seconds, "rate_limit_floor_seconds": floor, "concurrency": section.concurrency,
            "backend": section.backend, "model": section.model, "cost": cost, "stages": stages}


def plan(cfg: Config, rows: int, *, pilot_rows: int = 100, input: Path | None = None,
         skip: list[str] | None = None, progress: bool = True,
         echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Pilot (or reuse one), measure, project to `rows`; writes and returns `<pilot>/projection.json`'s body."""
    if pilot_rows > rows:
        pilot_rows = rows
    pilot_dir, reused = run_pilot(cfg, pilot_rows, input=input, skip=skip, progress=progress, echo=echo)
    measures = measure(pilot_dir)
    if not measures:
        raise ConfigError(f"{pilot_dir}: the pilot ran no stage; check [pipeline] skip and --input")
    budget = cfg.select.get("budget")
    result = project(measures, rows, cfg.teacher, select_budget=int(budget) if budget else None)
    result.update(pilot_dir=str(pilot_dir), pilot_rows=pilot_rows, pilot_reused=reused, config=cfg.source,
                  pilot_ended=read_json(pilot_dir / PILOT).get("ended"),
                  novelty=marginal.projection(pilot_dir, {"target": rows, **{t: n for t, n in TIERS.items() if n > rows}}))
    atomic_write_json(pilot_dir / PROJECTION, result)
    return result
