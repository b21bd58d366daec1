"""`distill select`: pick the release from a scored pool, best first, diverse (Deita + LIMA quotas).

Reads a scored dataset (the score stage's output); writes a dataset folder
with the selected rows (in input order; `meta["select"]` holds each row's
rank in the walk and its cosine to the nearest row selected before it) and
every other row in `rejected/` with its reason: unscored, below_min_score /
below_min_quality / below_min_accuracy, quota_full, too_similar (detail: the
cosine and the id of the selected row it repeats), budget_reached (the walk
stopped before reaching it). Phases, each kept on disk under `_work/`:

  1. scan    id, score and stratum of every row -> the walk order (score desc, then id)
  2. walk    the threshold (absolute, or the quantile of a sample's nearest-neighbour
             cosines: `calibrate`), then windows of candidates: embed, compare with the
             selected set -> decisions
  3. write   input chunk k -> part-k.parquet + rejected/part-k.parquet + done marker; manifest last

Memory is a few arrays per pool row (ids, scores, decisions: ~60 bytes a row)
plus the vectors of one window and of the selected set, never the pool's text.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ...embeddings.neighbors import SelectedSet
from ...store import Dataset, DatasetError, DatasetWriter, atomic_write_bytes, fingerprint, read_json
from . import calibrate
from . import scan as scanmod
from .config import SelectConfig
from .sources import against_source_for, make_source
from .walk import QUOTA_FULL, SELECTED, TOO_SIMILAR, UNLIMITED, WalkState, walk_window
from .write import write_phase

STAGE = "select"
WORK = "_work"
SELECTION = "selection.npz"
# Settings that change speed or memory, not the result: left out of the resume check.
NOT_RESULTS = {"device", "batch_size", "cache", "cache_dir", "model_cache_dir", "window_rows", "block"}


def _seed_with_against(sset, against, window_rows: int) -> np.ndarray:
    """Add every row of the `against` source to the set (they count as selected); returns their ids."""
    for a in range(0, against.rows, window_rows):
        sset.add(against.fetch(np.arange(a, min(a + window_rows, against.rows))))
    return against.ids


def _reach(budget: int | None, selected: int, left: int) -> int:
    """Candidates to embed next: all of them with no budget, else enough to fill the rest of it (30% spare)."""
    return left if budget is None else max(10_000, int(1.3 * (budget - selected)))


def resolve_threshold(scan: scanmod.Scan, cfg: SelectConfig, source, budget: int | None) -> dict[str, Any]:
    """The walk's threshold: the absolute one given, else the quantile of the pool's nearest-neighbour cosines."""
    if cfg.threshold is not None:
        return {"mode": "absolute", "value": float(cfg.threshold)}
    reach = scan.order[:min(cfg.window_rows, _reach(budget, 0, len(scan.order)))]
    return calibrate.resolve(source, reach, cfg.threshold_quantile, min(cfg.calibration_rows, budget or len(reach)))


def walk_phase(scan: scanmod.Scan, cfg: SelectConfig, source, window_rows: int, against=None, *,
               budget: int | None = None, threshold: float = 0.9) -> dict[str, Any]:
    """Walk the candidates best-first, a window at a time; fills scan.decision / nn_sim / nn_pos / rank.

    `budget`: rows to select (None: every one that passes); `threshold`: the resolved cosine.
    `against` (a source with `rows` and `ids`): rows that count as selected
    before the walk; a candidate whose nearest row is one of them gets
    nn_pos -2-k (k: its position there), so the detail can name it.
    """
    names = scan.strata_names
    caps = cfg.quota_counts(names, budget) if cfg.quota_by else {n: None for n in names}
    quota_left = np.array([UNLIMITED if caps[n] is None else caps[n] for n in names] or [UNLIMITED], dtype=np.int64)
    order = scan.order
    state = None
    sel_positions: list[np.ndarray] = []
    windows = 0
    t_embed = t_walk = 0.0
    a = 0
    while a < len(order) and not (state is not None and state.done):
        need = _reach(budget, state.selected if state else 0, len(order) - a)
        pos = order[a:a + min(window_rows, need)]
        t0 = time.monotonic()
        vecs = source.fetch(pos)
        t_embed += time.monotonic() - t0
        if state is None:
            prior = against.rows if against is not None else 0
            sset = SelectedSet(vecs.shape[1], exact_limit=cfg.exact_limit, nprobe=cfg.nprobe,
                               expected=prior + (budget or len(order)))
            if against is not None:
                scan.against_ids = _seed_with_against(sset, against, window_rows)
            state = WalkState(sset, quota_left, budget, prior=prior)
        t0 = time.monotonic()
        res = walk_window(vecs, scan.strata[pos], state, threshold, block=cfg.block)
        t_walk += time.monotonic() - t0
        seen = pos[:res.examined]
        scan.decision[seen] = res.decision
        scan.nn_sim[seen] = res.nn_sim
        chosen = seen[res.decision == SELECTED]
        sel_positions.append(chosen)
        all_sel = np.concatenate(sel_positions)
        nn = np.full(len(seen), -1, dtype=np.int64)
        ours = res.nn_index >= state.prior
        nn[ours] = all_sel[res.nn_index[ours] - state.prior]
        theirs = (res.nn_index >= 0) & ~ours
        nn[theirs] = -2 - res.nn_index[theirs]
        scan.nn_pos[seen] = nn
        a += len(pos)
        windows += 1
        del vecs
    selected = np.concatenate(sel_positions) if sel_positions else np.zeros(0, np.int64)
    scan.rank[selected] = np.arange(len(selected))
    return {"windows": windows, "embed_seconds": round(t_embed, 3), "walk_seconds": round(t_walk, 3),
            "approximate_search": bool(state is not None and state.sset.approximate),
            "ivf_cells": state.sset.nlist if state is not None else 0,
            "quota_caps": {n: caps[n] for n in names if caps[n] is not None}}


def _save(path: Path, scan: scanmod.Scan, info: dict[str, Any]) -> None:
    buf = io.BytesIO()
    np.savez(buf, decision=scan.decision, nn_sim=scan.nn_sim, nn_pos=scan.nn_pos, rank=scan.rank,
             against_ids=scan.against_ids, info=json.dumps(info))
    atomic_write_bytes(path, buf.getvalue())


def _load(path: Path, scan: scanmod.Scan) -> dict[str, Any] | None:
    if not path.exists():
        return None
    z = np.load(path)
    if len(z["decision"]) != len(scan.ids):
        return None
    scan.decision, scan.nn_sim, scan.nn_pos, scan.rank = z["decision"], z["nn_sim"], z["nn_pos"], z["rank"]
    scan.against_ids = z["against_ids"] if "against_ids" in z.files else np.zeros(0, "S24")
    return json.loads(str(z["info"]))


def _plan(cfg: SelectConfig, input_path: Path, shard_rows: int) -> dict[str, Any]:
    settings = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in NOT_RESULTS}
    return {"input": str(input_path), "shard_rows": shard_rows, "settings": settings, "stage": STAGE}


def run_select(input_path: str | Path, out: str | Path, cfg: SelectConfig, *, workdir: str | Path = "work",
               shard_rows: int = 1000, run_id: str | None = None, progress: bool = True,
               source=None, against_source=None, budget_source: str | None = None) -> dict[str, Any]:
    """Select from `input_path` into `out`; returns the manifest.

    `budget_source` says where cfg.budget came from, for the manifest (default: "config" when cfg.budget
    is set, "default" when it is DEFAULT_BUDGET).

    `source` overrides where vectors come from (anything with `fetch(positions)`),
    `against_source` where cfg.against's come from (also with `rows` and `ids`).
    A rerun with the same settings resumes (the walk is loaded, done shards
    are skipped); with other settings the folder is rebuilt from scratch.
    """
    t_start = time.monotonic()
    input_path, out = Path(input_path), Path(out)
    budget, budget_given = cfg.budget_rows(), cfg.budget is not None
    # The plan records the budget walked to, so a new default (another tier) is another selection.
    cfg = cfg.model_copy(update={"budget": "all" if budget is None else budget})
    ds = Dataset(input_path, require_complete=True)
    plan = dict(_plan(cfg, input_path, shard_rows), input_fingerprint=fingerprint(ds))
    old_plan = read_json(out / "_plan.json") if (out / "_plan.json").exists() else None
    fresh = old_plan is not None and old_plan != plan
    writer = DatasetWriter(out, STAGE, plan=plan, fresh=fresh)
    if fresh:
        (out / WORK / SELECTION).unlink(missing_ok=True)

    t0 = time.monotonic()
    scan = scanmod.scan(ds, cfg)
    t_scan = time.monotonic() - t0
    info = _load(out / WORK / SELECTION, scan)
    resumed = info is not None
    if info is None:
        if source is None and scan.n_candidates:
            source = make_source(ds, cfg, Path(workdir), len(scan.ids))
        if cfg.against and against_source is None and scan.n_candidates:
            against_source = against_source_for(Dataset(cfg.against, require_complete=True), source)
        if cfg.quota_by and budget is None and any(isinstance(q, float) for q in cfg.quotas.values()):
            raise DatasetError(f"select: a quota is a share ({cfg.quotas}) but budget = 'all'; give counts or a budget")
        if scan.n_candidates:
            t0 = time.monotonic()
            threshold = resolve_threshold(scan, cfg, source, budget)
            if threshold["mode"] == "quantile":
                threshold["seconds"] = round(time.monotonic() - t0, 3)
            info = walk_phase(scan, cfg, source, cfg.window_rows, against_source, budget=budget,
                              threshold=threshold["value"])
        else:
            threshold = {"mode": "absolute" if cfg.threshold is not None else "quantile",
                         "value": cfg.threshold if cfg.threshold is not None else 1.0}
            info = {"windows": 0}
        info["threshold"] = threshold
        info["text"] = getattr(source, "text", None)
        info["scan_seconds"] = round(t_scan, 3)
        info["embedder"] = getattr(source, "name", None)
        if against_source is not None:
            info["against"] = {"dataset": cfg.against, "rows": int(against_source.rows),
                               "vectors": getattr(against_source, "origin", "given")}
        cache = getattr(source, "cache", None)
        if cache is not None:
            info["embedding_cache"] = {"hits": cache.hits, "misses": cache.misses}
        _save(out / WORK / SELECTION, scan, info)

    threshold = info.get("threshold") or {"mode": "absolute", "value": cfg.threshold}
    t0 = time.monotonic()
    skipped = write_phase(ds, writer, scan, cfg.model_copy(update={"threshold": threshold["value"]}), shard_rows, progress)
    t_write = time.monotonic() - t0

    sel = scan.decision == SELECTED
    sims = scan.nn_sim[sel]
    sims = sims[np.isfinite(sims)]
    per_stratum = {}
    if cfg.quota_by:
        codes, counts = np.unique(scan.strata[sel], return_counts=True)
        per_stratum = {scan.strata_names[c]: int(n) for c, n in zip(codes, counts)}
    manifest = writer.write_manifest(
        run_id=run_id, input=str(input_path), settings=plan["settings"], shard_rows=shard_rows,
        budget=budget, budget_source=budget_source or ("config" if budget_given else "default"),
        threshold=threshold, embedded_text=info.get("text"), selected=int(sel.sum()), candidates=int(scan.n_candidates),
        examined=int(np.isin(scan.decision, [SELECTED, TOO_SIMILAR, QUOTA_FULL]).sum()),
        budget_met=bool(budget is not None and sel.sum() >= budget),
        selected_per_stratum=per_stratum, walk=info, walk_resumed=resumed, shards_skipped_on_resume=skipped,
        nn_sim_of_selected={"p50": float(np.median(sims)) if len(sims) else None,
                            "max": float(sims.max()) if len(sims) else None},
        phase_seconds={"scan": round(t_scan, 3), "write": round(t_write, 3)},
        wall_seconds_this_invocation=round(time.monotonic() - t_start, 3))
    return manifest
