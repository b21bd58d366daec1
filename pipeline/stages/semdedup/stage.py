"""The semdedup stage: drop rows that say the same thing in other words.

Reads one dataset folder, writes another (kept rows with `semdedup_cluster` =
the id of the row kept for their cluster; dropped rows in `rejected/` with
reason `semantic_duplicate` or `semantic_duplicate_of_existing` and the id and
cosine of the row they duplicate). `run_semdedup` reads like its table of
contents; each phase (phases.py) keeps its output on disk, so a killed run
resumes where it stopped:

  1. embed    input shard k -> <out>/_embeddings/part-k.{vecs,ids}.npy (via the embedding cache; here or as Ray tasks)
  2. search   all vectors, best row first -> pairs with cosine >= threshold -> <out>/_work/pairs.npz
  3. verify   (fast + verify) the full model re-checks each candidate pair
  4. against  (against) rows that duplicate the published dataset's rows
  5. decide   union-find clusters, one kept row per cluster (score, output length, id)
  6. write    input shard k -> part-k.parquet + rejected/part-k.parquet + done marker; manifest last
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ...embeddings import store
from ...embeddings.embedder import Embedder
from ...embeddings.encoder import make_encoder, texts_at
from ...executors.local import LocalExecutor
from ...runner import Progress
from ...store import Dataset, DatasetError, DatasetWriter, fingerprint
from . import phases
from .cluster import decide
from .config import SemdedupConfig

STAGE = phases.STAGE
# Settings that change where or how fast, not what: left out of the resume check.
NOT_RESULTS = {"device", "batch_size", "cache", "cache_dir", "model_cache_dir"}


def run_semdedup(input: str | Path, out: str | Path, cfg: SemdedupConfig | None = None, *,
                 run_id: str = "", workdir: str | Path = "work", shard_rows: int = 1000,
                 limit: int | None = None, seed: int = 0, progress: bool = True,
                 embedder: Embedder | None = None, full_embedder: Embedder | None = None,
                 executor: Any = None,
                 notify: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Remove near-duplicate rows of `input` by embedding cosine; write `out`; return its manifest.

    `embedder` / `full_embedder` replace the ones `cfg` names (tests pass one
    to count its calls; the scoring stage may share one already loaded).
    `executor` (pipeline/executors, default local) may run the embed phase's
    tasks on model workers (Ray), which load the embedder `cfg` names; search,
    clustering and writing stay here (they need every vector at once), so the
    result is the local one.
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
    writer = DatasetWriter(out, STAGE, plan={"input": str(ds.path), "input_fingerprint": fingerprint(ds), "shard_rows": shard_rows,
                                             "limit": limit, "settings": settings})
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    encoder = make_encoder(cfg, workdir, embedder=embedder, notify=notify)
    emb = encoder.embedder
    store.write_info(out, emb.name, emb.dim, cfg.fields)
    timings["load_model"] = time.monotonic() - t0

    # 1. embed
    t = time.monotonic()
    total = ds.num_rows() if limit is None else min(limit, ds.num_rows())
    ids, x, resumed, embed_info = phases.embed(ds, out, cfg, encoder, workdir, shard_rows, limit, total, progress,
                                               executor or LocalExecutor())
    timings["embed"] = time.monotonic() - t
    n = len(ids)

    # 2. search, over the vectors in canonical order (best row first)
    t = time.monotonic()
    perm = phases.canonical_order(ds, ids, shard_rows)
    xc = x[perm]
    pairs, search_info = phases.search_phase(out, xc, cfg, seed)
    timings["search"] = time.monotonic() - t

    # 3. verify
    sims_x, full_enc = xc, None
    if cfg.fast and cfg.verify:
        t = time.monotonic()
        full_enc = make_encoder(cfg.model_copy(update={"fast": False}), workdir, embedder=full_embedder)
        candidates = len(pairs)
        pairs, sims_x = phases.verify_pairs(pairs, perm, ds, cfg, full_enc)
        search_info.update(verify_candidates=candidates, verified_pairs=len(pairs), verifier=full_enc.embedder.name,
                           verify_rows_embedded=full_enc.misses)
        timings["verify"] = time.monotonic() - t

    # 4. against
    ag = phases.Against.nothing(n)
    if cfg.against:
        t = time.monotonic()
        ag, pairs = phases.against_phase(ds, cfg, encoder, full_enc, xc, perm, pairs, shard_rows, seed)
        timings["against"] = time.monotonic() - t

    # 5. decide, and the words of every row some dropped row duplicates (quoted in its drop_detail)
    t = time.monotonic()
    dec = decide(sims_x, pairs, np.arange(n))
    wanted = np.unique(dec.kept_pos[dec.dropped & ~ag.existing])
    quoted = dict(zip(wanted.tolist(), texts_at(ds, perm[wanted], cfg.fields)))
    timings["decide"] = time.monotonic() - t

    # 6. write
    t = time.monotonic()
    bar = Progress(total, f"{STAGE} write", progress)
    try:
        skipped = phases.write_phase(ds, writer, shard_rows, limit, perm, ids, dec, ag, bar, quoted)
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
        against=ag.info, shards_skipped_on_resume=skipped,
        timings={k: round(v, 3) for k, v in timings.items()},
        wall_seconds_this_invocation=round(time.monotonic() - t0, 3))
