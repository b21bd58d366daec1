"""`run_semdedup(input, out, cfg)`: the stage's Python API (the CLI and `distill run` call it).

Reads like its table of contents: embed -> search -> (verify) -> (against) ->
decide -> write, one timed phase each, then the manifest with the before/after
counts. See stage.py for what each phase keeps on disk.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ... import records
from ...runner import Progress
from ...store import Dataset, DatasetError, DatasetWriter
from . import embstore
from .cache import EmbeddingCache, NoCache
from .cluster import Decisions, decide, keep_rank
from .config import SemdedupConfig
from .embedder import Embedder, load_embedder
from .search import Pairs, nearest_in
from .stage import (_NOT_RESULTS, STAGE, _texts, embed_phase, iter_chunks, keep_keys,
                    search_phase, verify_pairs)


def _encoder(emb: Embedder, cfg: SemdedupConfig, workdir: Path):
    if not cfg.cache:
        return NoCache(emb)
    return EmbeddingCache(Path(cfg.cache_dir) if cfg.cache_dir else workdir / "cache" / "embeddings", emb)


def against_vectors(path: str | Path, encoder, cfg: SemdedupConfig, shard_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of a published dataset: its stored embeddings when they match, else embedded (cached)."""
    ads = Dataset(path)
    a_ids = ads.read(columns=["id"]).column("id").to_pylist()
    info = embstore.read_info(path)
    if info and info["fields"] == cfg.fields:
        stored = embstore.load_embeddings(path, ids=a_ids, embedder_name=encoder.embedder.name)
        if stored is not None and len(stored[0]) == len(set(a_ids)):
            return stored
    ids, vecs = [], []
    for _, t in iter_chunks(ads, shard_rows, columns=["id", *cfg.fields]):
        ids.extend(t.column("id").to_pylist())
        vecs.append(encoder.encode(_texts(t, cfg.fields)))
    dim = encoder.embedder.dim
    return np.asarray(ids, dtype="U"), (np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float32))


def _merge_meta(meta: str | None, value: dict[str, Any]) -> str:
    row = {"meta": meta}
    records.set_meta(row, STAGE, value)
    return row["meta"]


def write_phase(ds: Dataset, writer: DatasetWriter, shard_rows: int, limit: int | None, perm: np.ndarray,
                ids: np.ndarray, dec: Decisions, existing: np.ndarray, ex_ids: np.ndarray, ex_sim: np.ndarray,
                against: str | None, bar: Progress) -> int:
    """Write kept and rejected rows shard by shard (done shards are skipped); return shards skipped."""
    where = np.empty(len(perm), np.int64)
    where[perm] = np.arange(len(perm))  # input position -> canonical index
    kept_id = ids[perm[dec.kept_pos]]   # by canonical index
    skipped = 0
    for k, table in iter_chunks(ds, shard_rows, limit):
        base = k * shard_rows
        if writer.is_done(k):
            skipped += 1
            bar.update(table.num_rows)
            continue
        c = where[base: base + table.num_rows]
        drop = dec.dropped[c] | existing[c]
        kept = table.filter(pa.array(~drop))
        kc = c[~drop]
        kept = kept.set_column(kept.schema.get_field_index("semdedup_cluster"), "semdedup_cluster",
                               pa.array(kept_id[kc].tolist(), pa.string()))
        sizes = dec.cluster_size[kc]
        if (sizes > 1).any():
            metas = kept.column("meta").to_pylist()
            metas = [_merge_meta(m, {"cluster_size": int(s)}) if s > 1 else m for m, s in zip(metas, sizes)]
            kept = kept.set_column(kept.schema.get_field_index("meta"), "meta", pa.array(metas, pa.string()))
        rejected = []
        for row, ci in zip(table.filter(pa.array(drop)).to_pylist(), c[drop]):
            if existing[ci]:
                dup, sim = str(ex_ids[ci]), float(ex_sim[ci])
                detail = f"near-duplicate of {dup} in {against} (cosine {sim:.4f})"
                row["semdedup_cluster"] = dup
                row["meta"] = _merge_meta(row.get("meta"), {"dup_of": dup, "cosine": round(sim, 6), "against": against})
                rejected.append(records.rejected_row(row, STAGE, "semantic_duplicate_of_existing", detail))
                continue
            dup, sim = str(kept_id[ci]), float(dec.sim_to_kept[ci])
            via = str(ids[perm[dec.via_pos[ci]]])
            same = " (same instruction and input, another answer)" if dup == row["id"] else ""
            detail = f"near-duplicate of {dup}{same} (cosine {sim:.4f}); cluster of {int(dec.cluster_size[ci])}"
            if via != dup:
                detail += f", linked through {via} (cosine {dec.via_sim[ci]:.4f})"
            row["semdedup_cluster"] = dup
            row["meta"] = _merge_meta(row.get("meta"), {
                "dup_of": dup, "cosine": round(sim, 6), "via": via, "via_cosine": round(float(dec.via_sim[ci]), 6),
                "cluster_size": int(dec.cluster_size[ci])})
            rejected.append(records.rejected_row(row, STAGE, "semantic_duplicate", detail))
        writer.write_shard(k, kept, rejected, {"rows_in": table.num_rows})
        bar.update(table.num_rows)
    return skipped


def run_semdedup(input: str | Path, out: str | Path, cfg: SemdedupConfig | None = None, *,
                 run_id: str = "", workdir: str | Path = "work", shard_rows: int = 1000,
                 limit: int | None = None, seed: int = 0, progress: bool = True,
                 embedder: Embedder | None = None, full_embedder: Embedder | None = None) -> dict[str, Any]:
    """Remove near-duplicate rows of `input` by embedding cosine; write `out`; return its manifest.

    `embedder` / `full_embedder` replace the ones `cfg` names (tests pass one
    to count its calls; the scoring stage may share one already loaded).
    """
    cfg = cfg or SemdedupConfig()
    out, workdir = Path(out), Path(workdir)
    ds = Dataset(input, require_complete=True)
    if cfg.against and Path(cfg.against).resolve() == ds.path.resolve():
        raise DatasetError(f"{cfg.against}: --against names the input itself; name the published release instead")
    settings = {k: v for k, v in cfg.model_dump().items() if k not in _NOT_RESULTS}
    writer = DatasetWriter(out, STAGE, plan={"input": str(ds.path), "shard_rows": shard_rows,
                                             "limit": limit, "settings": settings})
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    emb = embedder or load_embedder(cfg.model, cfg.fast, cfg.device, batch_size=cfg.batch_size,
                                    cache_dir=Path(cfg.model_cache_dir) if cfg.model_cache_dir else None)
    encoder = _encoder(emb, cfg, workdir)
    embstore.write_info(out, emb.name, emb.dim, cfg.fields)
    timings["load_model"] = time.monotonic() - t0

    t = time.monotonic()
    total = ds.num_rows() if limit is None else min(limit, ds.num_rows())
    ids, x, resumed = embed_phase(ds, out, cfg, encoder, shard_rows, limit)
    timings["embed"] = time.monotonic() - t
    n = len(ids)

    t = time.monotonic()
    score, out_len, out_hash = keep_keys(ds, n, shard_rows)
    perm = np.argsort(keep_rank(ids, score, out_len, out_hash), kind="stable")  # canonical: best first
    xc = x[perm]
    pairs, search_info = search_phase(out, xc, cfg, seed)
    timings["search"] = time.monotonic() - t

    sims_x = xc
    if cfg.fast and cfg.verify:
        t = time.monotonic()
        full = full_embedder or load_embedder(cfg.model, False, cfg.device, batch_size=cfg.batch_size)
        full_enc = _encoder(full, cfg, workdir)
        candidates = len(pairs)
        pairs, sims_x = verify_pairs(pairs, perm, ds, cfg, full_enc, shard_rows)
        search_info.update(verify_candidates=candidates, verified_pairs=len(pairs), verifier=full.name,
                           verify_rows_embedded=full_enc.misses)
        timings["verify"] = time.monotonic() - t

    existing = np.zeros(n, bool)
    ex_ids, ex_sim = np.zeros(n, dtype="U1"), np.zeros(n)
    against_info: dict[str, Any] | None = None
    if cfg.against:
        t = time.monotonic()
        a_ids, a_vecs = against_vectors(cfg.against, encoder, cfg, shard_rows)
        cut = cfg.threshold if not cfg.fast else SemdedupConfig(fast=True, threshold=cfg.threshold,
                                                                 fast_threshold=cfg.fast_threshold).search_threshold()
        sims, idx = nearest_in(xc, a_vecs, approximate=len(a_vecs) * n > 4e9, nprobe=cfg.nprobe, seed=seed)
        existing = sims >= cut
        ex_ids = np.where(idx >= 0, a_ids[np.maximum(idx, 0)] if len(a_ids) else "", "")
        ex_sim = sims
        # Rows already published win: drop them from the graph, dedup the rest among themselves.
        keep_pair = ~(existing[pairs.i] | existing[pairs.j])
        pairs = Pairs(pairs.i[keep_pair], pairs.j[keep_pair], pairs.sim[keep_pair])
        against_info = {"path": str(cfg.against), "rows": int(len(a_ids)), "threshold": cut,
                        "dropped": int(existing.sum())}
        timings["against"] = time.monotonic() - t

    t = time.monotonic()
    dec = decide(sims_x, pairs, np.arange(n))
    timings["decide"] = time.monotonic() - t

    t = time.monotonic()
    bar = Progress(total, STAGE, progress)
    try:
        skipped = write_phase(ds, writer, shard_rows, limit, perm, ids, dec, existing, ex_ids, ex_sim,
                              cfg.against, bar)
    finally:
        bar.close()
    timings["write"] = time.monotonic() - t

    sizes = np.bincount(dec.kept_pos, minlength=n)
    return writer.write_manifest(
        run_id=run_id, input=str(ds.path), settings=settings, shard_rows=shard_rows, limit=limit,
        embedder=emb.name, embedding_dim=emb.dim,
        embed={"rows": n, "shards_resumed": resumed, "cache_hits": encoder.hits, "encoded": encoder.misses,
               "rows_per_second": round(encoder.misses / timings["embed"], 1) if timings["embed"] > 0 else None},
        search=search_info, pairs=int(len(pairs)),
        clusters={"with_duplicates": int((sizes > 1).sum()), "largest": int(sizes.max()) if n else 0,
                  "rows_in_clusters": int(sizes[sizes > 1].sum())},
        against=against_info, shards_skipped_on_resume=skipped,
        timings={k: round(v, 3) for k, v in timings.items()},
        wall_seconds_this_invocation=round(time.monotonic() - t0, 3))
