"""The per-block work of each phase, run in worker processes (or inline with one worker).

Every function takes one picklable task dict and writes its files under the
work folder, done marker last, so a rerun skips what is already there:

- `signature_task`  block -> sig (n x P uint32), band keys (B x n uint64),
                    tie hash, shingle counts, info (id, output length, score)
- `bands_task`      some bands -> candidate pairs per band (sorted band keys)
- `sets_task`       block -> sorted distinct shingle hashes of its candidate rows (exact verification)
- `filter_task`     block -> output shard k (kept), rejected/ shard k, stored signatures of kept rows
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import records
from pipeline.store import DatasetWriter, atomic_write_bytes

from . import cluster, kernels, text
from .blocks import Block, FileCache, available_columns, load_npy, read_block, save_json, save_npy, save_table
from .hashing import MAX_HASH, permutations

STAGE = "minhash"
UNIT = {"word": kernels.UNIT_WORD, "char": kernels.UNIT_CHAR}
MODE = {"fast": kernels.MODE_FAST, "datasketch": kernels.MODE_SHA1}


def _string_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (int64) and bytes of a large_string array, without copying the text."""
    arr = arr.cast(pa.large_string())
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], np.int64)[arr.offset:arr.offset + len(arr) + 1]
    data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None and bufs[2].size else np.zeros(1, np.uint8)
    return offsets, data


def block_text(table: pa.Table, fmt: dict[str, Any]) -> pa.Array:
    joined = text.join_columns(table, fmt["columns"])
    if isinstance(joined, pa.ChunkedArray):
        joined = joined.combine_chunks()
    return text.normalize_array(joined)


_SCRATCH: dict[str, np.ndarray] = {}


def _scratch(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A reused buffer per worker process: fresh arrays cost a page fault per 4 KiB touched,
    which on this kind of VM was ~20% of the signature kernel's time."""
    size = int(np.prod(shape))
    buf = _SCRATCH.get(name)
    if buf is None or buf.size < size or buf.dtype != dtype:
        buf = _SCRATCH[name] = np.empty(max(size, 1), dtype)
    return buf[:size].reshape(shape)


def compute_signatures(arr: pa.Array, fmt: dict[str, Any], want_sets: bool = False, scratch: bool = False):
    """Signatures (n x P uint32), shingle counts, and (want_sets) the CSR of shingle-hash sets.

    With `scratch` the arrays are views of per-process buffers, valid until the next call.
    """
    offsets, data = _string_buffers(arr)
    n = len(arr)
    a, b = permutations(fmt["num_perm"], fmt["seed"])
    new = _scratch if scratch else (lambda name, shape, dtype: np.empty(shape, dtype))
    sigs = new("sigs", (n, fmt["num_perm"]), np.uint32)
    nsh = new("nsh", (n,), np.int64)
    indptr = new("indptr", (n + 1 if want_sets else 0,), np.int64)
    # a word shingle starts at a token, and tokens are >= 1 byte plus a space
    cap = (int(offsets[-1] - offsets[0]) // (2 if fmt["unit"] == "word" else 1) + n + 1) if want_sets else 1
    values = new("values", (cap,), np.uint32)
    used = 0
    if n:
        used = kernels.signatures(offsets, data, text.separator_table(), text.lowercase_table(),
                                  fmt["fold_punctuation"], fmt["ngram"], UNIT[fmt["unit"]], MODE[fmt["hash"]],
                                  a, b, sigs, nsh, indptr, values)
    return sigs, nsh, (indptr, values[:used]) if want_sets else None


def signature_task(task: dict[str, Any]) -> dict[str, Any]:
    block, work, fmt = Block.from_dict(task["block"]), Path(task["work"]), task["fmt"]
    t0 = time.perf_counter()
    if block.ref:
        sigs = np.ascontiguousarray(load_npy(Path(block.sig_path)))
        nsh = (sigs != MAX_HASH).any(axis=1).astype(np.int64)  # all-max = empty text
        t = read_block(block, ["id"])
        info = pa.table({"id": t.column("id"), "out_len": pa.array(np.zeros(block.rows, np.int64)),
                         "score": pa.nulls(block.rows, pa.float64())})
    else:
        cols = available_columns(block)
        score_col = task["score_column"] if task["score_column"] in cols else None
        need = sorted(set(fmt["columns"]) | {"id", "output"} | ({score_col} if score_col else set()))
        t = read_block(block, need, FileCache())
        sigs, nsh, sets = compute_signatures(block_text(t, fmt), fmt, want_sets=task["exact"], scratch=True)
        if sets is not None:  # kept for exact verification: cheaper than reading the text again
            save_npy(work / f"setp-{block.name}.npy", sets[0])
            save_npy(work / f"setv-{block.name}.npy", sets[1])
        out = t.column("output").cast(pa.large_string())
        out_len = pc.fill_null(pc.utf8_length(out), 0).cast(pa.int64())
        score = t.column(score_col).cast(pa.float64()) if score_col else pa.nulls(block.rows, pa.float64())
        info = pa.table({"id": t.column("id"), "out_len": out_len, "score": score})
    bands, rows = task["bands"], task["rows_per_band"]
    keys = _scratch("keys", (bands, block.rows), np.uint64)
    kernels.band_keys(sigs, bands, rows, keys)
    name = block.name
    save_npy(work / f"sig-{name}.npy", sigs)
    save_npy(work / f"band-{name}.npy", keys)
    save_npy(work / f"tie-{name}.npy", cluster.sig_tie(sigs))
    save_npy(work / f"nsh-{name}.npy", nsh.astype(np.int32))
    save_table(work / f"info-{name}.parquet", info)
    stats = {"rows": block.rows, "shingles": int(nsh.sum()), "empty_rows": int((nsh == 0).sum()),
             "seconds": round(time.perf_counter() - t0, 3), "ref": block.ref}
    save_json(work / f"sig-{name}.done", stats)
    return stats


def bands_task(task: dict[str, Any]) -> dict[str, Any]:
    """Candidate pairs for the given bands over every block (new and reference)."""
    work = Path(task["work"])
    blocks = [Block.from_dict(b) for b in task["blocks"]]
    t0 = time.perf_counter()
    nsh = np.concatenate([load_npy(work / f"nsh-{b.name}.npy") for b in blocks]) if blocks else np.zeros(0, np.int32)
    valid = np.flatnonzero(nsh > 0)
    gidx = np.concatenate([np.arange(b.start, b.start + b.rows, dtype=np.int64) for b in blocks])[valid] if blocks else valid
    tie = np.concatenate([load_npy(work / f"tie-{b.name}.npy") for b in blocks])[valid] if blocks else np.zeros(0, np.uint64)
    counts = {}
    for band in task["bands"]:
        keys = np.concatenate([load_npy(work / f"band-{b.name}.npy", mmap=True)[band] for b in blocks])[valid]
        order = np.argsort(keys)
        pairs = cluster.run_pairs(keys, order, gidx, tie, task["first_ref"])
        save_npy(work / f"pairs-{band:03d}.npy", pairs)
        counts[band] = int(pairs.shape[0])
        save_json(work / f"pairs-{band:03d}.done", {"pairs": counts[band]})
    return {"pairs": counts, "seconds": round(time.perf_counter() - t0, 3)}


def sets_task(task: dict[str, Any]) -> dict[str, Any]:
    """Sorted distinct shingle hashes of this block's candidate rows (exact verification).

    New blocks take them from the raw sets their signature task kept; reference
    blocks (no kept sets) shingle those rows' text again.
    """
    block, work, fmt = Block.from_dict(task["block"]), Path(task["work"]), task["fmt"]
    local = np.asarray(task["local"], np.int64)
    if block.ref:
        t = read_block(block, fmt["columns"], FileCache())
        offsets, data = _string_buffers(block_text(t, fmt))
        indptr, values = kernels.shingle_sets(offsets, data, local, text.separator_table(), text.lowercase_table(),
                                              fmt["fold_punctuation"], fmt["ngram"], UNIT[fmt["unit"]],
                                              MODE[fmt["hash"]])
    else:
        ptr = load_npy(work / f"setp-{block.name}.npy", mmap=True)
        raw = load_npy(work / f"setv-{block.name}.npy", mmap=True)
        starts = np.asarray(ptr[local])
        lens = np.asarray(ptr[local + 1]) - starts
        off = np.concatenate([[0], np.cumsum(lens)])
        pos = np.repeat(starts - off[:-1], lens) + np.arange(off[-1])
        indptr, values = kernels.sort_sets(off, np.asarray(raw[pos]))
    save_npy(work / f"csetp-{block.name}.npy", indptr)
    save_npy(work / f"csetv-{block.name}.npy", values)
    save_json(work / f"set-{block.name}.done", {"rows": int(local.shape[0])})
    return {"rows": int(local.shape[0])}


def _meta_with(meta: str | None, value: dict[str, Any]) -> str:
    d = json.loads(meta) if meta else {}
    d[STAGE] = value
    return json.dumps(d, ensure_ascii=False, sort_keys=True)


def filter_task(task: dict[str, Any]) -> dict[str, Any]:
    """Write output shard k: kept rows (with minhash_cluster), rejected rows with reasons, kept signatures."""
    block, work, out = Block.from_dict(task["block"]), Path(task["work"]), Path(task["out"])
    t0 = time.perf_counter()
    d = task["decisions"]  # the block's removed rows, ascending local position
    table = records.conform(read_block(block, None, FileCache()))
    n = table.num_rows
    dropped = np.zeros(n, np.bool_)
    dropped[np.asarray(d["local"], np.int64)] = True
    mask = pa.array(dropped)
    ids = table.column("id").combine_chunks()
    if len(d["local"]):  # a removed row's cluster is the kept row it duplicates; others are their own
        ids = pc.replace_with_mask(ids, mask, pa.array(d["leader_id"], pa.string()))
    table = table.set_column(table.schema.get_field_index("minhash_cluster"), "minhash_cluster", ids)
    kept = table.filter(pc.invert(mask))
    rej = table.filter(mask)
    if rej.num_rows:
        reasons, details, metas = [], [], []
        for i, meta in enumerate(rej.column("meta").to_pylist()):
            ref = d["leader_ref"][i]
            dup, est, ver = d["leader_id"][i], d["est"][i], d["ver"][i]
            reasons.append("near_duplicate_existing" if ref else "near_duplicate")
            where = f" in {d['leader_src'][i]}" if ref else ""
            details.append(f"near-duplicate of {dup}{where} (Jaccard {task['verify']} {ver:.3f}, estimated {est:.3f})")
            metas.append(_meta_with(meta, {"duplicate_of": dup, "estimated": round(est, 4), "verified": round(ver, 4),
                                           "verify": task["verify"], "against": bool(ref)}))
        rej = rej.set_column(rej.schema.get_field_index("meta"), "meta", pa.array(metas, pa.string()))
        rej = (rej.append_column("drop_stage", pa.array([STAGE] * rej.num_rows, pa.string()))
               .append_column("drop_reason", pa.array(reasons, pa.string()))
               .append_column("drop_detail", pa.array(details, pa.string())))
    sigs = load_npy(work / f"sig-{block.name}.npy", mmap=True)
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(sigs[~dropped]), allow_pickle=False)
    atomic_write_bytes(out / "_minhash" / f"part-{block.index:05d}.sig.npy", buf.getvalue())
    stats = {"rows_in": n, "seconds": round(time.perf_counter() - t0, 3)}
    DatasetWriter.attach(out, STAGE).write_shard(block.index, kept, rej if rej.num_rows else None, stats)
    return {"rows_in": n, "rows_out": kept.num_rows}

