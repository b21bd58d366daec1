"""`run_minhash`: remove near-duplicate rows by MinHash LSH, in explicit on-disk phases.

Reads one dataset folder; writes another: kept rows (`minhash_cluster` set to
the id of the kept row each row belongs to), `rejected/` rows with reason
`near_duplicate` (or `near_duplicate_existing` for an `--against` match) and
the duplicated row's id and similarities, `clusters.parquet` (every row of a
non-trivial cluster), `_minhash/` (signatures of the kept rows, for later
incremental runs) and `_manifest.json` last.

The run reads like its phases; each one's output is on disk under `_work/`
with done markers, so a kill at any point resumes at the unfinished phase:

    signatures  per block, in worker processes: signatures, band keys
    candidates  per band, in workers: sort band keys, runs of equal keys -> pairs
    verify      exact shingle Jaccard (or signature estimate) of every pair
    clusters    union-find over verified pairs, keep decisions, cluster table
    filter      per block, in workers: output shards, rejected rows, signatures
"""

from __future__ import annotations

import json
import resource
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from ... import records
from ...errors import ConfigError
from ...executors.local import LocalExecutor
from ...runner import Progress
from ...store import Dataset, DatasetWriter, fingerprint, read_json
from ...store.atomic import clean_temporaries
from . import phases, sigstore
from .blocks import Block, load_npy, plan_blocks, save_json, save_npy
from .candidates import choose_banding
from .clusters import decide_clusters, verify
from .config import MinhashConfig
from .signatures import UNICODE_VERSION

# Below this many rows every phase runs in this process: starting a worker
# (interpreter, Arrow, numba cache) costs a second or two, more than the work.
INLINE_BELOW_ROWS = 50_000


def _rss_mb() -> dict[str, float]:
    return {"main": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "workers": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}


def run_minhash(input: str | Path, out: str | Path, config: MinhashConfig | None = None, *,
                limit: int | None = None, run_id: str | None = None, progress: bool = True,
                echo: Callable[[str], None] | None = None,
                on_phase: Callable[[str], None] | None = None, executor: Any = None) -> dict[str, Any]:
    """Deduplicate `input` into `out`; returns the manifest. A rerun resumes unfinished phases.

    `executor` (pipeline/executors) runs the per-block and per-band tasks:
    by default local processes (`config.workers`), or Ray tasks.
    Scripts that call this with more than one worker need the usual
    `if __name__ == "__main__":` guard (worker processes are spawned).
    """
    cfg = config or MinhashConfig()
    say = echo or (lambda s: None)
    out = Path(out)
    ds = Dataset(input, require_complete=True)
    unknown = [c for c in cfg.columns if c not in records.COLUMN_NAMES]
    if unknown:
        raise ConfigError(f"[minhash] columns: {unknown} are not record columns")
    numeric = [n for n, t, _ in records.COLUMNS if pa.types.is_floating(t) or pa.types.is_integer(t)]
    if "score" in cfg.keep_by and cfg.score_column not in numeric:
        raise ConfigError(f"[minhash] score_column: {cfg.score_column!r} is not a numeric record column ({', '.join(numeric)})")
    fmt = cfg.signature_format()
    banding = choose_banding(cfg.threshold, cfg.num_perm, cfg.recall_at_threshold, cfg.bands, cfg.rows_per_band)
    say(f"minhash: {banding.describe()}")
    blocks = plan_blocks(ds, cfg.shard_rows, limit)
    n_new = sum(b.rows for b in blocks)
    refs = sigstore.ref_blocks(cfg.against, fmt, n_new)
    every = blocks + refs
    settings = cfg.model_dump(exclude={"workers", "keep_work", "add_to_against"})
    plan = {"input": str(ds.path), "input_fingerprint": fingerprint(ds), "limit": limit, "shard_rows": cfg.shard_rows,
            "settings": settings}
    finished = _already_finished(out, dict(plan, stage=phases.STAGE))
    if finished is not None:
        say(f"minhash: {out} is already complete with these settings; nothing to do")
        return finished
    writer = DatasetWriter(out, phases.STAGE, plan=plan)
    work = out / "_work"
    work.mkdir(parents=True, exist_ok=True)
    clean_temporaries(work)
    clean_temporaries(out / sigstore.STORE_DIR)  # a signature file a killed run was writing
    times: dict[str, float] = {}
    skipped: list[str] = []
    t_all = time.perf_counter()

    def phase_done(name: str, t0: float, did_work: bool) -> None:
        times[name] = round(time.perf_counter() - t0, 3)
        if not did_work:
            skipped.append(name)
        say(f"minhash: {name} {'done' if did_work else 'already done'} in {times[name]:.1f}s")
        if on_phase:
            on_phase(name)

    total_rows = sum(b.rows for b in every)
    pool = (executor or LocalExecutor()).pool(cfg.workers if total_rows >= INLINE_BELOW_ROWS else 1, warm=phases.warm)
    with pool:
        # 1. signatures and band keys, per block
        t0 = time.perf_counter()
        todo = [b for b in every if not (work / f"sig-{b.name}.done").exists()]
        bar = Progress(sum(b.rows for b in todo), "minhash signatures", progress)
        base = {"work": str(work), "fmt": fmt, "bands": banding.bands, "rows_per_band": banding.rows,
                "score_column": cfg.score_column, "exact": cfg.verify == "exact"}
        for st in pool.imap(phases.signature_task, [dict(base, block=b.to_dict()) for b in todo]):
            bar.update(st["rows"])
        bar.close()
        phase_done("signatures", t0, bool(todo))

        # 2. candidate pairs: sort each band's keys, pair up runs of equal keys
        t0 = time.perf_counter()
        bands = [j for j in range(banding.bands) if every and not (work / f"pairs-{j:03d}.done").exists()]
        blocks_d = [b.to_dict() for b in every]
        # a few bands per task: each task loads every block's shingle counts and tie hashes once
        groups = [bands[i::2 * pool.workers] for i in range(min(len(bands), 2 * pool.workers))]
        pool.map(phases.bands_task, [{"work": str(work), "blocks": blocks_d, "bands": g, "first_ref": n_new}
                                     for g in groups])
        did = bool(bands) or not (work / "pairs.done").exists()
        if not (work / "pairs.done").exists():
            raw = [load_npy(work / f"pairs-{j:03d}.npy") for j in range(banding.bands)] if every else []
            uniq = np.unique(np.concatenate(raw)) if raw else np.zeros(0, np.uint64)
            save_npy(work / "pairs.npy", uniq)
            save_json(work / "pairs.done", {"raw": int(sum(len(r) for r in raw)), "unique": int(len(uniq))})
        phase_done("candidates", t0, did)

        # 3. verify every candidate pair
        t0 = time.perf_counter()
        did = not (work / "verify.done").exists()
        gathered = verify(work, every, cfg, fmt, pool) if did else None
        phase_done("verify", t0, did)

        # 4. union-find over verified pairs, keep decisions, cluster table
        t0 = time.perf_counter()
        did = not (work / "clusters.done").exists()
        if did:
            decide_clusters(work, every, cfg, gathered)
        phase_done("clusters", t0, did)

        # 5. write kept and rejected rows, per block
        t0 = time.perf_counter()
        todo = [b for b in blocks if not writer.is_done(b.index)]
        dec = pa.ipc.open_file(str(work / "decisions.arrow")).read_all() if todo else None
        bar = Progress(sum(b.rows for b in todo), "minhash filter", progress)
        tasks = [_filter_task(b, dec, work, out, cfg) for b in todo]
        for st in pool.imap(phases.filter_task, tasks):
            writer.commit(st["staged"], st["stats"])
            bar.update(st["rows_in"])
        bar.close()
        phase_done("filter", t0, bool(todo))
        used_workers = pool.workers
    rss = _rss_mb()
    return _finish(writer, work, out, ds, cfg, fmt, banding, blocks, refs, times, skipped, rss,
                   time.perf_counter() - t_all, run_id, limit, say, used_workers)


def _already_finished(out: Path, plan: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest of a finished run with the same plan (its phase files are gone; redoing is waste)."""
    try:
        same = json.loads((out / "_plan.json").read_text()) == json.loads(json.dumps(plan, default=str))
        return json.loads((out / "_manifest.json").read_text()) if same else None
    except (OSError, ValueError):
        return None


def _filter_task(b: Block, dec: pa.Table, work: Path, out: Path, cfg: MinhashConfig) -> dict[str, Any]:
    g = dec.column("row").to_numpy()
    s, e = np.searchsorted(g, [b.start, b.start + b.rows])
    part = dec.slice(s, e - s)
    part = part.filter(part.column("dropped"))
    d = {"local": (part.column("row").to_numpy() - b.start).tolist(),
         "leader_id": part.column("duplicate_of").to_pylist(), "est": part.column("estimated").to_pylist(),
         "ver": part.column("verified").to_pylist(), "leader_ref": part.column("duplicate_of_ref").to_pylist(),
         "leader_src": part.column("duplicate_of_source").to_pylist()}
    return {"block": b.to_dict(), "work": str(work), "out": str(out), "decisions": d, "verify": cfg.verify}


def _finish(writer: DatasetWriter, work: Path, out: Path, ds: Dataset, cfg: MinhashConfig, fmt: dict,
            banding, blocks: list[Block], refs: list[Block], times: dict, skipped: list, rss: dict,
            wall: float, run_id: str | None, limit: int | None, say, used_workers: int) -> dict[str, Any]:
    markers = {m["shard"]: m for m in writer.done_markers()}
    segments = [{"rows": f"part-{b.index:05d}.parquet", "sig": f"_minhash/part-{b.index:05d}.sig.npy",
                 "n": int(markers[b.index]["rows_out"])} for b in blocks]
    sigstore.write_store(out, fmt, segments)
    if cfg.add_to_against:
        added = sigstore.add_segments(cfg.against[0], fmt, out, segments)
        say(f"minhash: registered {added} signature segments with {cfg.against[0]}")
    sig = [read_json(work / f"sig-{b.name}.done") for b in blocks]
    cand = read_json(work / "pairs.done")
    ver = read_json(work / "verify.done")
    clu = read_json(work / "clusters.done")
    rows_in = sum(b.rows for b in blocks)
    manifest = writer.write_manifest(
        run_id=run_id, input=str(ds.path), limit=limit, settings=cfg.model_dump(),
        signature_format=fmt, hash_note=_hash_note(cfg.hash), unicode_version=UNICODE_VERSION,
        banding=banding.to_dict(), against=cfg.against,
        against_rows=sum(b.rows for b in refs), shingles=sum(s["shingles"] for s in sig),
        empty_text_rows=sum(s["empty_rows"] for s in sig),
        candidate_pairs_raw=cand["raw"], candidate_pairs=cand["unique"], candidate_rows=ver["candidate_rows"],
        verified_pairs=ver["verified_pairs"], verify=cfg.verify, cluster_mode=cfg.cluster, **clu,
        phase_seconds=times, phases_skipped_on_resume=skipped, wall_seconds_this_invocation=round(wall, 3),
        rows_per_second=round(rows_in / wall, 1) if wall > 0 and not skipped else None,
        peak_rss_mb=rss, workers=used_workers)
    if not cfg.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    say(f"minhash: {manifest['rows_in']} rows in, {manifest['rows_out']} kept, {manifest['rows_rejected']} removed "
        f"({', '.join(f'{k}={v}' for k, v in manifest['drops'].items()) or 'none'})")
    return manifest


def _hash_note(mode: str) -> str:
    if mode == "datasketch":
        return "datasketch: sha1_hash32 of the shingle bytes; signatures equal datasketch.MinHash(num_perm, seed) bit for bit"
    return ("fast: multiply-xorshift token hashes combined per shingle, murmur3 finaliser (not datasketch's "
            "default sha1); signatures equal "
            "datasketch.MinHash(num_perm, seed, hashfunc=pipeline.stages.minhash.signatures.hashfunc('fast', unit))")

