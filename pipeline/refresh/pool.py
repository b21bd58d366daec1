"""A release version's pool/: every row published so far, with what the next night's dedup reads.

    pool/part-NNNNN.parquet                 record schema; the previous version's parts hard-linked
                                            (files are never rewritten in place), tonight's rows appended
    pool/_minhash/store.json, part-*.sig.npy MinHash signatures in the sigstore format (minhash's `against`)
    pool/_embeddings/_info.json, part-*     embeddings in the embeddings.store format (semdedup's `against`)
    pool/_manifest.json                     written last: the parts, the version each was added in, rows

Stored signatures and embeddings are reused when they were made with
tonight's settings and recomputed otherwise (a changed [minhash] shingling
or [semdedup] model must not make the next night's `against` fail or slow).
Tonight's embeddings come from the semdedup step's own store; signatures are
computed here (a fast kernel, and exact for the rows as published).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import records
from ..embeddings import store as es
from ..embeddings.encoder import text_of
from ..errors import DatasetError
from ..stages.minhash.phases import block_text, compute_signatures
from ..stages.minhash.sigstore import load_store, store_path, write_store
from ..store import PART_RE, Dataset, atomic_write_json, atomic_write_table, shard_name
from ..store.atomic import atomic_write_npy

STAGE = "refresh_pool"


def pool_of(version: Path | None) -> Path | None:
    """The published `version`'s pool/ (None before the first version); a release not made by refresh has none."""
    if version is None:
        return None
    if not (version / "pool" / "_manifest.json").exists():
        raise DatasetError(f"{version}: the published version has no pool/ (was it published by "
                           "`distill refresh`?); point [refresh] publish_dir at a refresh release folder")
    return version / "pool"


def _link(src: Path, dst: Path) -> None:
    """Hard link (free, and safe: published files are replaced, never modified); copy across filesystems."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _store_in(dataset: Path, fmt: dict[str, Any]) -> dict[str, Any] | None:
    """`dataset`'s signature store, when it holds signatures in `fmt`."""
    store = load_store(dataset) if store_path(dataset).exists() else None
    return store if store is not None and store.get("format") == fmt else None


class _Signatures:
    """MinHash signatures of the pool's parts in tonight's format, reused from the previous pool when comparable."""

    def __init__(self, pool: Path, fmt: dict[str, Any] | None, previous: Path | None):
        self.pool, self.fmt = pool, fmt
        self.segments: list[dict[str, Any]] = []
        self.reused = self.computed = 0
        store = _store_in(previous, fmt) if fmt is not None and previous is not None else None
        self.prev: dict[str, Path] = {s["rows"]: previous / s["sig"] for s in store["segments"]
                                      if not Path(s["sig"]).is_absolute()} if store else {}

    def add(self, index: int, table_or_file: pa.Table | Path, n: int) -> None:
        if self.fmt is None:
            return
        rel = f"_minhash/part-{index:05d}.sig.npy"
        src = self.prev.get(table_or_file.name) if isinstance(table_or_file, Path) else None
        if src is not None and src.exists() and np.load(src, mmap_mode="r").shape == (n, self.fmt["num_perm"]):
            _link(src, self.pool / rel)
            self.reused += n
        else:
            t = pq.read_table(table_or_file, columns=self.fmt["columns"]) if isinstance(table_or_file, Path) \
                else table_or_file
            sigs, _, _ = compute_signatures(block_text(t, self.fmt), self.fmt)
            atomic_write_npy(self.pool / rel, np.ascontiguousarray(sigs))
            self.computed += n
        self.segments.append({"rows": shard_name(index), "sig": rel, "n": n})

    def finish(self) -> dict[str, Any] | None:
        if self.fmt is None:
            return None
        write_store(self.pool, self.fmt, self.segments)
        return {"format": self.fmt, "rows_reused": self.reused, "rows_computed": self.computed}


class _Embeddings:
    """Embeddings of the pool's parts for the embedder semdedup used tonight (none when it did not run)."""

    def __init__(self, pool: Path, source: Path | None, previous: Path | None, encoder: Callable[[], Any]):
        self.pool = pool
        self.info = es.read_info(source) if source is not None else None
        self.source = source
        self.prev = previous if previous is not None and self.info is not None \
            and es.read_info(previous) == self.info else None
        self.make_encoder, self.encoder = encoder, None  # built for the first row it must encode
        self.reused = self.copied = self.encoded = 0

    def add(self, index: int, table_or_file: pa.Table | Path, n: int, prev_index: int | None = None) -> None:
        if self.info is None:
            return
        if self.prev is not None and prev_index is not None and es.has_shard(self.prev, prev_index):
            old = [es.emb_dir(self.prev) / f"part-{prev_index:05d}.{k}.npy" for k in ("vecs", "ids")]
            if len(np.load(old[1])) == n:
                for src, kind in zip(old, ("vecs", "ids")):
                    _link(src, es.emb_dir(self.pool) / f"part-{index:05d}.{kind}.npy")
                self.reused += n
                return
        t = (pq.read_table(table_or_file, columns=["id", *self.info["fields"]])
             if isinstance(table_or_file, Path) else table_or_file)
        ids = t.column("id").to_pylist()
        vecs = np.zeros((len(ids), self.info["dim"]), np.float32)
        found = es.load_embeddings(self.source, ids=ids, embedder_name=self.info["embedder"])
        where = {i: k for k, i in enumerate(found[0].tolist())} if found is not None else {}
        missing = [k for k, i in enumerate(ids) if i not in where]
        for k, i in enumerate(ids):
            if i in where:
                vecs[k] = found[1][where[i]]
        if missing:
            self.encoder = self.encoder if self.encoder is not None else self.make_encoder()
            vecs[missing] = self.encoder.encode(text_of(t.take(pa.array(missing, pa.int64())), self.info["fields"]))
            self.encoded += len(missing)
        self.copied += len(ids) - len(missing)
        es.write_shard(self.pool, index, ids, vecs)

    def finish(self) -> dict[str, Any] | None:
        if self.info is None:
            return None
        es.write_info(self.pool, self.info["embedder"], self.info["dim"], self.info["fields"])
        return {**self.info, "rows_reused": self.reused, "rows_from_semdedup": self.copied,
                "rows_encoded": self.encoded}


def signature_view(previous: Path, fmt: dict[str, Any], out: Path) -> Path:
    """`previous` itself when its stored signatures have tonight's format; else a folder whose store
    points at its parts with signatures recomputed in that format (what minhash reads as `ctx.against`)."""
    if _store_in(previous, fmt) is not None:
        return previous
    sigs = _Signatures(out, fmt, None)
    for i, shard in enumerate(Dataset(previous, require_complete=True).shards):
        sigs.add(i, shard, pq.ParquetFile(shard).metadata.num_rows)
    for seg, shard in zip(sigs.segments, Dataset(previous).shards):
        seg["rows"] = str(shard.resolve())
    sigs.finish()
    return out


def build_pool(pool: Path, previous: Path | None, new: Path, *, version: str, run_id: str,
               minhash_format: dict[str, Any] | None, embeddings_from: Path | None,
               make_encoder: Callable[[], Any], shard_rows: int = 100_000) -> dict[str, Any]:
    """Write `pool` = `previous` pool's rows + `new`'s rows; returns its manifest (written last)."""
    pool.mkdir(parents=True, exist_ok=True)
    sigs = _Signatures(pool, minhash_format, previous)
    embs = _Embeddings(pool, embeddings_from, previous, make_encoder)
    parts: list[dict[str, Any]] = []
    index = 0
    prev_manifest: dict[str, Any] = {}
    if previous is not None:
        pds = Dataset(previous, require_complete=True)
        prev_manifest = pds.manifest() or {}
        added_in = {p["file"]: p.get("added_in") for p in prev_manifest.get("parts", [])}
        for shard in pds.shards:
            n = pq.ParquetFile(shard).metadata.num_rows
            _link(shard, pool / shard_name(index))
            sigs.add(index, shard, n)
            embs.add(index, shard, n, prev_index=int(PART_RE.match(shard.name).group(1)))
            parts.append({"file": shard_name(index), "rows": n, "added_in": added_in.get(shard.name)})
            index += 1
    carried = sum(p["rows"] for p in parts)
    for batch in Dataset(new, require_complete=True).iter_batches(batch_size=shard_rows):
        t = records.conform(pa.Table.from_batches([batch]))
        if not t.num_rows:
            continue
        atomic_write_table(pool / shard_name(index), t)
        sigs.add(index, t, t.num_rows)
        embs.add(index, t, t.num_rows)
        parts.append({"file": shard_name(index), "rows": t.num_rows, "added_in": version})
        index += 1
    total = sum(p["rows"] for p in parts)
    manifest = {
        "stage": STAGE, "created_at": records.now_utc().isoformat(), "run_id": run_id, "version": version,
        # `input` is tonight's selected rows, so the dataset card's upstream chain shows tonight's stages.
        "input": str(new), "previous_pool": str(previous) if previous else None,
        "previous_version": prev_manifest.get("version"),
        "rows_in": total, "rows_out": total, "rows_rejected": 0, "drops": {},
        "rows_carried": carried, "rows_added": total - carried, "shards": len(parts), "parts": parts,
        "minhash": sigs.finish(), "embeddings": embs.finish(),
        "schema": [f.name for f in records.SCHEMA],
    }
    atomic_write_json(pool / "_manifest.json", manifest)
    return manifest
