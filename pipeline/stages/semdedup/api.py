"""`run_semdedup(input, out, cfg)`: the stage's Python API (the CLI and `distill run` call it).

Reads like its table of contents: embed -> search -> (verify) -> (against) ->
decide -> write, one timed phase each, then the manifest with the before/after
counts. See stage.py for what each phase keeps on disk.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

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
from .search import Pairs, exact_sims, nearest_in
from .stage import (
    NOT_RESULTS,
    STAGE,
    embed_phase,
    iter_chunks,
    keep_keys,
    row_texts,
    search_phase,
    texts_at,
    verify_pairs,
)


def _encoder(emb: Embedder, cfg: SemdedupConfig, workdir: Path):
    if not cfg.cache:
        return NoCache(emb)
    return EmbeddingCache(Path(cfg.cache_dir) if cfg.cache_dir else workdir / "cache" / "embeddings", emb)


def stored_for(path: str | Path, ids: list[str], name: str, fields: list[str],
               max_depth: int = 20) -> tuple[np.ndarray, np.ndarray, str] | None:
    """Stored embeddings covering every id of the dataset at `path`: its own, or an upstream folder's.

    A published dataset is often a later stage's output (score, select) whose
    rows all passed through a semdedup folder upstream; the `input` recorded
    in each manifest leads there. Only vectors of the same embedder and the
    same embedded fields count. Returns (ids, vectors, folder) or None.
    """
    from ...store import read_json
    p: Path | None = Path(path)
    seen: set[str] = set()
    want = len(set(ids))
    while p is not None and len(seen) < max_depth and str(p.resolve()) not in seen:
        seen.add(str(p.resolve()))
        info = embstore.read_info(p)
        if info and info["fields"] == fields and info["embedder"] == name:
            got = embstore.load_embeddings(p, ids=ids, embedder_name=name)
            if got is not None and len(got[0]) == want:
                return got[0], got[1], str(p)
        mf = p / "_manifest.json"
        m = read_json(mf) if mf.exists() else {}
        p = Path(m["input"]) if m.get("input") else None
    return None


def against_vectors(path: str | Path, encoder, cfg: SemdedupConfig,
                    shard_rows: int) -> tuple[np.ndarray, np.ndarray, str | None]:
    """(ids, vectors, folder they were stored in) of a published dataset.

    Its stored embeddings (see `stored_for`) when there are some; otherwise
    its rows are embedded here (through the embedding cache, so rows this
    workdir embedded before cost nothing) and the folder is None.
    """
    ads = Dataset(path, require_complete=True)
    a_ids = ads.read(columns=["id"]).column("id").to_pylist()
    stored = stored_for(path, a_ids, encoder.embedder.name, cfg.fields)
    if stored is not None:
        return stored
    ids, vecs = [], []
    for _, t in iter_chunks(ads, shard_rows, columns=["id", *cfg.fields]):
        ids.extend(t.column("id").to_pylist())
        vecs.append(encoder.encode(row_texts(t, cfg.fields)))
    dim = encoder.embedder.dim
    return np.asarray(ids, dtype="U"), (np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float32)), None


SNIPPET = 80  # characters of the duplicated row's text quoted in drop_detail


def snippet(text: str, width: int = SNIPPET) -> str:
    """One line of at most `width` characters, quoted: enough for `distill inspect` to show what matched."""
    flat = " ".join(text.split())
    return '"' + (flat if len(flat) <= width else flat[: width - 1] + "…") + '"'


def against_texts(path: str | Path, ids: set[str], fields: list[str]) -> dict[str, str]:
    """id -> embedded text of those rows of the published dataset (first occurrence)."""
    import pyarrow.compute as pc
    found: dict[str, str] = {}
    if not ids:
        return found
    for batch in Dataset(path).iter_batches(columns=["id", *fields], batch_size=65536):
        t = pa.Table.from_batches([batch])
        t = t.filter(pc.is_in(t.column("id"), value_set=pa.array(sorted(ids), pa.string())))
        for i, text in zip(t.column("id").to_pylist(), row_texts(t, fields)):
            found.setdefault(i, text)
    return found


def _merge_meta(meta: str | None, value: dict[str, Any]) -> str:
    row = {"meta": meta}
    records.set_meta(row, STAGE, value)
    return row["meta"]


def write_phase(ds: Dataset, writer: DatasetWriter, shard_rows: int, limit: int | None, perm: np.ndarray,
                ids: np.ndarray, dec: Decisions, existing: np.ndarray, ex_ids: np.ndarray, ex_sim: np.ndarray,
                against: str | None, bar: Progress, quoted: dict[int, str] | None = None,
                ex_quoted: dict[str, str] | None = None) -> int:
    """Write kept and rejected rows shard by shard (done shards are skipped); return shards skipped.

    `quoted` (canonical index of a kept row -> its text) and `ex_quoted`
    (published id -> text) put the duplicated row's words into each drop_detail.
    """
    quoted, ex_quoted = quoted or {}, ex_quoted or {}
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
                q = f" {snippet(ex_quoted[dup])}" if dup in ex_quoted else ""
                detail = f"near-duplicate of {dup}{q} in {against} (cosine {sim:.4f})"
                row["semdedup_cluster"] = dup
                row["meta"] = _merge_meta(row.get("meta"), {"dup_of": dup, "cosine": round(sim, 6), "against": against})
                rejected.append(records.rejected_row(row, STAGE, "semantic_duplicate_of_existing", detail))
                continue
            dup, sim = str(kept_id[ci]), float(dec.sim_to_kept[ci])
            via = str(ids[perm[dec.via_pos[ci]]])
            kp = int(dec.kept_pos[ci])
            if dup == row["id"]:
                what = " (same instruction and input, another answer)"
            else:
                what = f" {snippet(quoted[kp])}" if kp in quoted else ""
            detail = f"near-duplicate of {dup}{what} (cosine {sim:.4f}); cluster of {int(dec.cluster_size[ci])}"
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


def _embed(ds: Dataset, out: Path, cfg: SemdedupConfig, encoder, workdir: Path, shard_rows: int,
           limit: int | None, total: int, progress: bool, executor: str, ray_address: str | None):
    """The embed phase, here or on Ray actors; (ids, vectors, shards resumed, what the manifest says of it)."""
    t = time.monotonic()
    if executor == "ray":
        from ...executors.ray_embed import embed_phase_ray
        # The actors keep their own cache counters; what the driver knows is the rows it sent them.
        before = sum(len(np.load(embstore.emb_dir(out) / f"part-{k:05d}.ids.npy")) for k in embstore.shard_indices(out))
        ids, x, resumed = embed_phase_ray(ds, out, cfg, workdir, shard_rows, limit, ray_address=ray_address)
        dt = time.monotonic() - t
        sent = max(len(ids) - (before if resumed else 0), 0)
        info = {"executor": "ray", "rows_sent_to_actors": int(sent), "cache_hits": None, "encoded": None,
                "rows_per_second": round(sent / dt, 1) if dt > 0 and sent else None}
        return ids, x, resumed, info
    if executor != "local":
        raise ValueError(f"unknown executor {executor!r}; use 'local' or 'ray'")
    bar = Progress(total, f"{STAGE} embed", progress)
    try:
        ids, x, resumed = embed_phase(ds, out, cfg, encoder, shard_rows, limit, bar=bar)
    finally:
        bar.close()
    dt = time.monotonic() - t
    info = {"executor": "local", "cache_hits": encoder.hits, "encoded": encoder.misses,
            "rows_per_second": round(encoder.misses / dt, 1) if dt > 0 and encoder.misses else None}
    tuning = getattr(encoder.embedder, "tuning", None)
    if tuning:
        info["batch_size"] = encoder.embedder.batch_size
        info["batch_size_trials_chars_per_s"] = tuning
    return ids, x, resumed, info


def run_semdedup(input: str | Path, out: str | Path, cfg: SemdedupConfig | None = None, *,
                 run_id: str = "", workdir: str | Path = "work", shard_rows: int = 1000,
                 limit: int | None = None, seed: int = 0, progress: bool = True,
                 embedder: Embedder | None = None, full_embedder: Embedder | None = None,
                 executor: str = "local", ray_address: str | None = None,
                 notify: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Remove near-duplicate rows of `input` by embedding cosine; write `out`; return its manifest.

    `embedder` / `full_embedder` replace the ones `cfg` names (tests pass one
    to count its calls; the scoring stage may share one already loaded).
    `executor="ray"` embeds on Ray actors (pipeline/executors/ray_embed.py),
    which load the embedder `cfg` names; search, clustering and writing stay
    here (they need every vector at once), so the result is the local one.
    `notify` hears one-off notices (the fast model's first build).
    """
    cfg = cfg or SemdedupConfig()
    out, workdir = Path(out), Path(workdir)
    ds = Dataset(input, require_complete=True)
    if cfg.against and Path(cfg.against).resolve() == ds.path.resolve():
        raise DatasetError(f"{cfg.against}: --against names the input itself; name the published release instead")
    if cfg.against:
        Dataset(cfg.against, require_complete=True)  # a bad --against fails before minutes of embedding
    settings = {k: v for k, v in cfg.model_dump().items() if k not in NOT_RESULTS}
    writer = DatasetWriter(out, STAGE, plan={"input": str(ds.path), "shard_rows": shard_rows,
                                             "limit": limit, "settings": settings})
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    emb = embedder or load_embedder(cfg.model, cfg.fast, cfg.device, batch_size=cfg.batch_size,
                                    cache_dir=Path(cfg.model_cache_dir) if cfg.model_cache_dir else None,
                                    notify=notify)
    encoder = _encoder(emb, cfg, workdir)
    embstore.write_info(out, emb.name, emb.dim, cfg.fields)
    timings["load_model"] = time.monotonic() - t0

    t = time.monotonic()
    total = ds.num_rows() if limit is None else min(limit, ds.num_rows())
    ids, x, resumed, embed_info = _embed(ds, out, cfg, encoder, workdir, shard_rows, limit, total, progress,
                                         executor, ray_address)
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
    ex_quoted: dict[str, str] = {}
    if cfg.against:
        t = time.monotonic()
        a_ids, a_vecs, stored_in = against_vectors(cfg.against, encoder, cfg, shard_rows)
        cut = cfg.search_threshold()
        sims, idx = nearest_in(xc, a_vecs, approximate=len(a_vecs) * n > 4e9, nprobe=cfg.nprobe, seed=seed)
        existing = sims >= cut
        ex_ids = np.where(idx >= 0, a_ids[np.maximum(idx, 0)] if len(a_ids) else "", "")
        ex_sim = sims
        ex_quoted = against_texts(cfg.against, set(ex_ids[existing].tolist()), cfg.fields)
        against_info = {"path": str(cfg.against), "rows": int(len(a_ids)), "threshold": cut,
                        "stored_embeddings": stored_in, "candidates": int(existing.sum())}
        if cfg.fast and cfg.verify and existing.any():
            # As for pairs inside the input: the full model confirms each fast-path match.
            rows = np.flatnonzero(existing)
            mine = full_enc.encode(texts_at(ds, perm[rows], cfg.fields, shard_rows))
            theirs = full_enc.encode([ex_quoted.get(str(ex_ids[r]), "") for r in rows])
            ex_sim = ex_sim.astype(np.float64)
            ex_sim[rows] = exact_sims(mine, theirs)
            existing[rows] = ex_sim[rows] >= cfg.threshold
            against_info["verified_threshold"] = cfg.threshold
        # Rows already published win: drop them from the graph, dedup the rest among themselves.
        keep_pair = ~(existing[pairs.i] | existing[pairs.j])
        pairs = Pairs(pairs.i[keep_pair], pairs.j[keep_pair], pairs.sim[keep_pair])
        against_info["dropped"] = int(existing.sum())
        timings["against"] = time.monotonic() - t

    t = time.monotonic()
    dec = decide(sims_x, pairs, np.arange(n))
    # The words of every row some dropped row duplicates, quoted in its drop_detail.
    wanted = np.unique(dec.kept_pos[dec.dropped & ~existing])
    quoted = dict(zip(wanted.tolist(), texts_at(ds, perm[wanted], cfg.fields, shard_rows)))
    timings["decide"] = time.monotonic() - t

    t = time.monotonic()
    bar = Progress(total, f"{STAGE} write", progress)
    try:
        skipped = write_phase(ds, writer, shard_rows, limit, perm, ids, dec, existing, ex_ids, ex_sim,
                              cfg.against, bar, quoted, ex_quoted)
    finally:
        bar.close()
    timings["write"] = time.monotonic() - t

    sizes = np.bincount(dec.kept_pos, minlength=n)
    return writer.write_manifest(
        run_id=run_id, input=str(ds.path), settings=settings, shard_rows=shard_rows, limit=limit,
        embedder=emb.name, embedding_dim=emb.dim,
        embed={"rows": n, "shards_resumed": resumed, **embed_info},
        search=search_info, pairs=int(len(pairs)),
        clusters={"with_duplicates": int((sizes > 1).sum()), "largest": int(sizes.max()) if n else 0,
                  "rows_in_clusters": int(sizes[sizes > 1].sum())},
        against=against_info, shards_skipped_on_resume=skipped,
        timings={k: round(v, 3) for k, v in timings.items()},
        wall_seconds_this_invocation=round(time.monotonic() - t0, 3))
