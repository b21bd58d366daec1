"""The semdedup stage: drop rows that say the same thing in other words.

Reads one dataset folder, writes another (kept rows with `semdedup_cluster` =
the id of the row kept for their cluster; dropped rows in `rejected/` with
reason `semantic_duplicate` or `semantic_duplicate_of_existing` and the id and
cosine of the row they duplicate). Phases, each with its output on disk so a
killed run resumes where it stopped:

  1. embed    input shard k -> <out>/_embeddings/part-k.{vecs,ids}.npy (via the embedding cache;
              here, or on Ray actors with executor = "ray": pipeline/executors/ray_embed.py)
  2. search   all vectors, in id order -> pairs with cosine >= threshold -> <out>/_work/pairs.npz
  3. decide   union-find clusters, one kept row per cluster (score, output length, id)
  4. write    input shard k -> part-k.parquet + rejected/part-k.parquet + done marker; manifest last
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from ...store import Dataset, atomic_write_bytes
from . import embstore
from .cache import to_stored
from .config import SemdedupConfig
from .search import Pairs, exact_sims, find_pairs, sampled_recall

STAGE = "semdedup"
PAIRS_FILE = "_work/pairs.npz"
VERIFY_CHUNK = 4096  # rows the full model embeds per cache segment while verifying
# Settings that change where or how fast, not what: left out of the resume check.
NOT_RESULTS = {"device", "batch_size", "cache", "cache_dir", "model_cache_dir"}


def iter_chunks(ds: Dataset, shard_rows: int, limit: int | None = None,
                columns: list[str] | None = None) -> Iterator[tuple[int, pa.Table]]:
    """(k, rows k*shard_rows ...) as Arrow tables, in input order: the same cut as runner.iter_shards."""
    pending: list[pa.RecordBatch] = []
    held = seen = index = 0
    for batch in ds.iter_batches(columns=columns, batch_size=shard_rows):
        if limit is not None:
            batch = batch.slice(0, max(0, limit - seen))
        seen += batch.num_rows
        pending.append(batch)
        held += batch.num_rows
        while held >= shard_rows:
            table = pa.Table.from_batches(pending)
            yield index, table.slice(0, shard_rows)
            index += 1
            rest = table.slice(shard_rows)
            pending, held = rest.to_batches(), rest.num_rows
        if limit is not None and seen >= limit:
            break
    if held:
        yield index, pa.Table.from_batches(pending)


def row_texts(table: pa.Table, fields: list[str]) -> list[str]:
    """The embedded text of each row: the chosen fields, non-empty ones, joined by a blank line."""
    cols = [table.column(f).to_pylist() for f in fields]
    return ["\n\n".join(v for v in vals if v) for vals in zip(*cols)]


def embed_phase(ds: Dataset, out: Path, cfg: SemdedupConfig, encoder, shard_rows: int,
                limit: int | None, bar=None) -> tuple[np.ndarray, np.ndarray, int]:
    """Embed every input shard not embedded yet; return (ids, vectors) of all shards, and shards resumed.

    A stored shard is reused only when it holds exactly the ids the input
    shard holds now (an input rewritten in place is embedded again).
    """
    resumed = 0
    ids, vecs = [], []
    for k, table in iter_chunks(ds, shard_rows, limit, columns=["id", *cfg.fields]):
        sid = np.asarray(table.column("id").to_pylist(), dtype="U")
        if embstore.has_shard(out, k):
            old_ids, sv = embstore.read_shard(out, k)
            if np.array_equal(old_ids, sid):  # the same rows as when it was written: reuse
                resumed += 1
                ids.append(sid)
                vecs.append(sv)
                if bar is not None:
                    bar.update(table.num_rows)
                continue
        v = encoder.encode(row_texts(table, cfg.fields))
        embstore.write_shard(out, k, sid.tolist(), v)
        ids.append(sid)
        vecs.append(to_stored(v))
        if bar is not None:
            bar.update(table.num_rows)
    if not ids:
        return np.zeros(0, "U24"), np.zeros((0, encoder.embedder.dim), np.float32), resumed
    return np.concatenate(ids), np.concatenate(vecs), resumed


def texts_at(ds: Dataset, positions: np.ndarray, fields: list[str], shard_rows: int) -> list[str]:
    """The embedded text of the input rows at `positions` (any order, repeats allowed), one pass over the input."""
    positions = np.asarray(positions, np.int64)
    out = [""] * len(positions)
    if not len(positions):
        return out
    order = np.argsort(positions, kind="stable")
    sp = positions[order]
    for k, t in iter_chunks(ds, shard_rows, int(sp[-1]) + 1, columns=fields):
        base = k * shard_rows
        lo, hi = np.searchsorted(sp, [base, base + t.num_rows])
        if hi > lo:
            for o, text in zip(order[lo:hi], row_texts(t.take(pa.array(sp[lo:hi] - base)), fields)):
                out[o] = text
    return out


def keep_keys(ds: Dataset, n: int, shard_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(score, output length, output hash) of the first n input rows, for the keep policy."""
    scores, lens, hashes = [], [], []
    for _, t in iter_chunks(ds, shard_rows, n, columns=["score", "output"]):
        scores.append(t.column("score").to_numpy(zero_copy_only=False).astype(np.float64))
        lens.append(pc.fill_null(pc.utf8_length(t.column("output")), 0).to_numpy().astype(np.int64))
        hashes.append(np.array([xxhash.xxh64_intdigest((o or "").encode("utf-8")) for o in t.column("output").to_pylist()], np.uint64))
    if not scores:
        return np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.uint64)
    return np.concatenate(scores), np.concatenate(lens), np.concatenate(hashes)


def _digest(x: np.ndarray) -> str:
    """Identity of the search input (vectors in canonical order): a resumed search reuses only its own pairs."""
    h = xxhash.xxh3_128()
    for a in range(0, len(x), 65536):
        h.update(np.ascontiguousarray(x[a:a + 65536]).tobytes())
    return f"{len(x)}:{h.hexdigest()}"


def search_phase(out: Path, x: np.ndarray, cfg: SemdedupConfig, seed: int) -> tuple[Pairs, dict[str, Any]]:
    """Pairs over the canonical-order vectors, saved to disk (a resumed run loads them)."""
    path = out / PAIRS_FILE
    digest = _digest(x)
    if path.exists():
        z = np.load(path)
        if str(z["digest"]) == digest:  # pairs of exactly these vectors, in this order
            return Pairs(z["i"], z["j"], z["sim"]), json.loads(str(z["info"]))
    t0 = time.monotonic()
    pairs, method = find_pairs(x, cfg.search_threshold(), cfg.search, exact_max_rows=cfg.exact_max_rows,
                               nlist=cfg.nlist, nprobe=cfg.nprobe, kmeans_clusters=cfg.kmeans_clusters, seed=seed)
    info = {"method": method, "search_threshold": cfg.search_threshold(), "candidate_pairs": len(pairs),
            "search_seconds": round(time.monotonic() - t0, 3)}
    if method != "exact":  # say how much the approximate search missed, measured on a sample
        info["recall_vs_exact_sampled"] = sampled_recall(x, pairs, cfg.search_threshold(), seed=seed)
    buf = io.BytesIO()
    np.savez(buf, i=pairs.i, j=pairs.j, sim=pairs.sim, digest=digest, info=json.dumps(info))
    atomic_write_bytes(path, buf.getvalue())
    return pairs, info


def verify_pairs(pairs: Pairs, positions: np.ndarray, ds: Dataset, cfg: SemdedupConfig, full_encoder,
                 shard_rows: int) -> tuple[Pairs, np.ndarray]:
    """Re-check fast-path candidates with the full model.

    Only rows in some candidate pair are embedded by the full model (through
    its own cache). Returns the confirmed pairs and full-model vectors per
    canonical row (zeros for rows in no pair), for the reported similarities.
    """
    if not len(pairs):
        return pairs, np.zeros((len(positions), full_encoder.embedder.dim), np.float32)
    rows = np.unique(np.concatenate([pairs.i, pairs.j]))  # canonical indices, ascending
    texts = texts_at(ds, positions[rows], cfg.fields, shard_rows)
    full = np.zeros((len(positions), full_encoder.embedder.dim), np.float32)
    # In chunks: each is a segment of the embedding cache as soon as it is done,
    # so a run killed during the (slow, full-model) verify resumes from there.
    for a in range(0, len(rows), VERIFY_CHUNK):
        full[rows[a:a + VERIFY_CHUNK]] = full_encoder.encode(texts[a:a + VERIFY_CHUNK])
    sim = exact_sims(full[pairs.i], full[pairs.j])
    keep = sim >= cfg.threshold
    return Pairs(pairs.i[keep], pairs.j[keep], sim[keep]), full
