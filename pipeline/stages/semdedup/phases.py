"""The semdedup stage's phases, in the order `run_semdedup` (stage.py, which lists what each
keeps on disk) runs them. The embed phase is one picklable `embed_chunk` task per input chunk,
run here or by any `imap(fn, tasks)` pool (Ray's). Decisions are cluster.py's."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from ... import records
from ...embeddings import store
from ...embeddings.encoder import make_encoder, text_of, texts_at
from ...embeddings.store import stored_for
from ...runner import Progress
from ...store import Dataset, DatasetWriter, atomic_write_bytes
from .cluster import Decisions, keep_rank
from .config import SemdedupConfig
from .search import Pairs, exact_sims, find_pairs, nearest_in, sampled_recall

STAGE = "semdedup"
PAIRS_FILE = "_work/pairs.npz"
VERIFY_CHUNK = 4096  # rows the full model embeds per cache segment while verifying
SNIPPET = 80  # characters of the duplicated row's text quoted in drop_detail


@functools.lru_cache(maxsize=2)
def _process_encoder(section_json: str, workdir: str):
    return make_encoder(SemdedupConfig.model_validate_json(section_json), workdir)


def embed_chunk(task: dict[str, Any], encoder=None) -> dict[str, Any]:
    """Embed one chunk's texts and store them as shard `index` of `<out>/_embeddings/`.

    The task is picklable, so any `map(fn, tasks)` executor can run it. Without
    `encoder` the process builds the task's encoder once and keeps it: a Ray
    worker loads the model for its first chunk only. The cache writes uniquely
    named segments, so workers sharing it never clobber each other.
    """
    enc = encoder if encoder is not None else _process_encoder(task["section"], task["workdir"])
    store.write_shard(task["out"], task["index"], task["ids"], enc.encode(task["texts"]))
    return {"index": task["index"], "rows": len(task["ids"])}


def embed_phase(ds: Dataset, out: Path, cfg: SemdedupConfig, encoder, shard_rows: int, limit: int | None,
                bar=None, *, pool=None, workdir: str | Path = "work") -> tuple[np.ndarray, np.ndarray, int]:
    """Embed every input chunk not embedded yet; return (ids, vectors) of all chunks, and chunks resumed.

    A stored shard is reused only when it holds exactly the ids the input
    chunk holds now (an input rewritten in place is embedded again). `pool`
    (anything with `imap(fn, tasks)`, e.g. the Ray executor's RayPool) runs the
    chunks' `embed_chunk` tasks; by default they run here, with `encoder`.
    """
    indices: list[int] = []
    resumed = 0
    common = {"out": str(Path(out).resolve()), "section": cfg.model_dump_json(),
              "workdir": str(Path(workdir).resolve())}

    def tasks() -> Iterator[dict[str, Any]]:
        nonlocal resumed
        for k, table in ds.iter_tables(shard_rows, limit, columns=["id", *cfg.fields]):
            indices.append(k)
            sid = np.asarray(table.column("id").to_pylist(), dtype="U")
            if store.has_shard(out, k) and np.array_equal(store.read_shard(out, k)[0], sid):
                resumed += 1  # the same rows as when it was written: reuse
                if bar is not None:
                    bar.update(table.num_rows)
                continue
            yield dict(common, index=k, ids=sid.tolist(), texts=text_of(table, cfg.fields))

    done = pool.imap(embed_chunk, tasks()) if pool is not None else (embed_chunk(t, encoder) for t in tasks())
    for r in done:
        if bar is not None:
            bar.update(r["rows"])
    if not indices:
        return np.zeros(0, "U24"), np.zeros((0, encoder.embedder.dim), np.float32), resumed
    parts = [store.read_shard(out, k) for k in indices]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), resumed


def embed(ds: Dataset, out: Path, cfg: SemdedupConfig, encoder, workdir: Path, shard_rows: int, limit: int | None,
          total: int, progress: bool, executor: Any):
    """The embed phase, here or on the executor's model workers; (ids, vectors, chunks resumed, what the
    manifest says of it)."""
    t = time.monotonic()
    pool = executor.model_pool(use_gpus=cfg.device != "cpu")  # None: here, with the encoder already loaded
    if pool is not None:
        # The workers keep their own cache counters; what the driver knows is the rows it sent them.
        before = sum(len(np.load(store.emb_dir(out) / f"part-{k:05d}.ids.npy")) for k in store.shard_indices(out))
    bar = Progress(total, f"{STAGE} embed", progress)
    try:
        with pool or contextlib.nullcontext():
            ids, x, resumed = embed_phase(ds, out, cfg, encoder, shard_rows, limit, bar, pool=pool, workdir=workdir)
    finally:
        bar.close()
    dt = time.monotonic() - t
    if pool is not None:
        sent = max(len(ids) - (before if resumed else 0), 0)
        return ids, x, resumed, {"executor": executor.name, "rows_sent_to_actors": int(sent), "cache_hits": None,
                                 "encoded": None, "rows_per_second": round(sent / dt, 1) if dt > 0 and sent else None}
    info = {"executor": "local", "cache_hits": encoder.hits, "encoded": encoder.misses,
            "rows_per_second": round(encoder.misses / dt, 1) if dt > 0 and encoder.misses else None}
    tuning = getattr(encoder.embedder, "tuning", None)
    if tuning:
        info["batch_size"] = encoder.embedder.batch_size
        info["batch_size_trials_chars_per_s"] = tuning
    return ids, x, resumed, info


def canonical_order(ds: Dataset, ids: np.ndarray, shard_rows: int) -> np.ndarray:
    """Input positions best row first under the keep policy (score, output length, id, output hash)."""
    scores, lens, hashes = [], [], []
    for _, t in ds.iter_tables(shard_rows, len(ids), columns=["score", "output"]):
        scores.append(t.column("score").to_numpy(zero_copy_only=False).astype(np.float64))
        lens.append(pc.fill_null(pc.utf8_length(t.column("output")), 0).to_numpy().astype(np.int64))
        hashes.append(np.array([xxhash.xxh64_intdigest((o or "").encode("utf-8")) for o in t.column("output").to_pylist()], np.uint64))
    if not scores:
        scores, lens, hashes = [np.zeros(0)], [np.zeros(0, np.int64)], [np.zeros(0, np.uint64)]
    keys = np.concatenate(scores), np.concatenate(lens), np.concatenate(hashes)
    return np.argsort(keep_rank(ids, *keys), kind="stable")


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


def verify_pairs(pairs: Pairs, positions: np.ndarray, ds: Dataset, cfg: SemdedupConfig,
                 full_encoder) -> tuple[Pairs, np.ndarray]:
    """Re-check fast-path candidates with the full model.

    Only rows in some candidate pair are embedded by the full model (through
    its own cache). Returns the confirmed pairs and full-model vectors per
    canonical row (zeros for rows in no pair), for the reported similarities.
    """
    if not len(pairs):
        return pairs, np.zeros((len(positions), full_encoder.embedder.dim), np.float32)
    rows = np.unique(np.concatenate([pairs.i, pairs.j]))  # canonical indices, ascending
    texts = texts_at(ds, positions[rows], cfg.fields)
    full = np.zeros((len(positions), full_encoder.embedder.dim), np.float32)
    # In chunks: each is a segment of the embedding cache as soon as it is done,
    # so a run killed during the (slow, full-model) verify resumes from there.
    for a in range(0, len(rows), VERIFY_CHUNK):
        full[rows[a:a + VERIFY_CHUNK]] = full_encoder.encode(texts[a:a + VERIFY_CHUNK])
    sim = exact_sims(full[pairs.i], full[pairs.j])
    keep = sim >= cfg.threshold
    return Pairs(pairs.i[keep], pairs.j[keep], sim[keep]), full


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
    for _, t in ads.iter_tables(shard_rows, columns=["id", *cfg.fields]):
        ids.extend(t.column("id").to_pylist())
        vecs.append(encoder.encode(text_of(t, cfg.fields)))
    dim = encoder.embedder.dim
    return np.asarray(ids, dtype="U"), (np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float32)), None


def against_texts(path: str | Path, ids: set[str], fields: list[str]) -> dict[str, str]:
    """id -> embedded text of those rows of the published dataset (first occurrence)."""
    found: dict[str, str] = {}
    if not ids:
        return found
    for batch in Dataset(path).iter_batches(columns=["id", *fields], batch_size=65536):
        t = pa.Table.from_batches([batch])
        t = t.filter(pc.is_in(t.column("id"), value_set=pa.array(sorted(ids), pa.string())))
        for i, text in zip(t.column("id").to_pylist(), text_of(t, fields)):
            found.setdefault(i, text)
    return found


@dataclass
class Against:
    """Per canonical row: does it duplicate a published row, which one, at what cosine; plus that row's text."""

    existing: np.ndarray
    ids: np.ndarray
    sim: np.ndarray
    path: str | None = None
    quoted: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] | None = None

    @classmethod
    def nothing(cls, n: int) -> "Against":
        return cls(np.zeros(n, bool), np.zeros(n, dtype="U1"), np.zeros(n))


def against_phase(ds: Dataset, cfg: SemdedupConfig, encoder, full_encoder, xc: np.ndarray, perm: np.ndarray,
                  pairs: Pairs, shard_rows: int, seed: int) -> tuple[Against, Pairs]:
    """Rows near-duplicating `cfg.against`'s rows, and the pairs left among the other rows."""
    n = len(xc)
    a_ids, a_vecs, stored_in = against_vectors(cfg.against, encoder, cfg, shard_rows)
    cut = cfg.search_threshold()
    sims, idx = nearest_in(xc, a_vecs, approximate=len(a_vecs) * n > 4e9, nprobe=cfg.nprobe, seed=seed)
    existing = sims >= cut
    ex_ids = np.where(idx >= 0, a_ids[np.maximum(idx, 0)] if len(a_ids) else "", "")
    ex_sim = sims
    quoted = against_texts(cfg.against, set(ex_ids[existing].tolist()), cfg.fields)
    info = {"path": str(cfg.against), "rows": int(len(a_ids)), "threshold": cut,
            "stored_embeddings": stored_in, "candidates": int(existing.sum())}
    if full_encoder is not None and existing.any():
        # As for pairs inside the input: the full model confirms each fast-path match.
        rows = np.flatnonzero(existing)
        mine = full_encoder.encode(texts_at(ds, perm[rows], cfg.fields))
        theirs = full_encoder.encode([quoted.get(str(ex_ids[r]), "") for r in rows])
        ex_sim = ex_sim.astype(np.float64)
        ex_sim[rows] = exact_sims(mine, theirs)
        existing[rows] = ex_sim[rows] >= cfg.threshold
        info["verified_threshold"] = cfg.threshold
    # Rows already published win: drop them from the graph, dedup the rest among themselves.
    keep_pair = ~(existing[pairs.i] | existing[pairs.j])
    info["dropped"] = int(existing.sum())
    return (Against(existing, ex_ids, ex_sim, str(cfg.against), quoted, info),
            Pairs(pairs.i[keep_pair], pairs.j[keep_pair], pairs.sim[keep_pair]))


def snippet(text: str, width: int = SNIPPET) -> str:
    """One line of at most `width` characters, quoted: enough for `distill inspect` to show what matched."""
    flat = " ".join(text.split())
    return '"' + (flat if len(flat) <= width else flat[: width - 1] + "…") + '"'


def _merge_meta(meta: str | None, value: dict[str, Any]) -> str:
    row = {"meta": meta}
    records.set_meta(row, STAGE, value)
    return row["meta"]


def write_phase(ds: Dataset, writer: DatasetWriter, shard_rows: int, limit: int | None, perm: np.ndarray,
                ids: np.ndarray, dec: Decisions, ag: Against, bar: Progress,
                quoted: dict[int, str] | None = None) -> int:
    """Write kept and rejected rows shard by shard (done shards are skipped); return shards skipped.

    `quoted` (canonical index of a kept row -> its text) and `ag.quoted`
    (published id -> text) put the duplicated row's words into each drop_detail.
    """
    quoted = quoted or {}
    where = np.empty(len(perm), np.int64)
    where[perm] = np.arange(len(perm))  # input position -> canonical index
    kept_id = ids[perm[dec.kept_pos]]   # by canonical index
    skipped = 0
    for k, table in ds.iter_tables(shard_rows, limit):
        base = k * shard_rows
        if writer.is_done(k):
            skipped += 1
            bar.update(table.num_rows)
            continue
        c = where[base: base + table.num_rows]
        drop = dec.dropped[c] | ag.existing[c]
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
            if ag.existing[ci]:
                dup, sim = str(ag.ids[ci]), float(ag.sim[ci])
                q = f" {snippet(ag.quoted[dup])}" if dup in ag.quoted else ""
                detail = f"near-duplicate of {dup}{q} in {ag.path} (cosine {sim:.4f})"
                row["semdedup_cluster"] = dup
                row["meta"] = _merge_meta(row.get("meta"), {"dup_of": dup, "cosine": round(sim, 6), "against": ag.path})
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
