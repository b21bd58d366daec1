"""The per-block work of each phase, run in worker processes (or inline with one worker), and the signing of
Arrow text with the compiled kernels that it shares with refresh (`block_text`, `compute_signatures`).

Every task function takes one picklable task dict and writes its files under the
work folder, done marker last, so a rerun skips what is already there:

- `signature_task`  block -> sig (n x P uint32), band keys (B x n uint64),
                    tie hash, shingle counts, info (id, output length, score)
- `bands_task`      some bands -> candidate pairs per band (sorted band keys)
- `sets_task`       block -> its candidate rows' signatures and shingle hashes, compact (verification)
- `filter_task`     block -> output shard k (kept), rejected/ shard k, stored signatures of kept rows
"""

from __future__ import annotations

import io
import time
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ... import records
from ...store import atomic_write_bytes, stage_shard
from . import kernels
from .blocks import Block, load_npy, read_block, read_npy_into, save_json, save_npy, save_table, write_npy_rows
from .candidates import run_pairs, sig_tie
from .rejects import rejected_columns
from .signatures import MAX_HASH, NEEDS_NFKC, join_columns, lowercase_table, permutations, separator_table

STAGE = "minhash"
UNIT = {"word": kernels.UNIT_WORD, "char": kernels.UNIT_CHAR}
MODE = {"fast": kernels.MODE_FAST, "datasketch": kernels.MODE_SHA1}


def warm() -> None:
    """Loaded in each worker process as it starts: the imports, the compiled kernels, the text tables."""
    separator_table()
    lowercase_table()


def string_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (int64) and bytes of a large_string array, without copying the text."""
    arr = arr.cast(pa.large_string())
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], np.int64)[arr.offset:arr.offset + len(arr) + 1]
    data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None and bufs[2].size else np.zeros(1, np.uint8)
    return offsets, data


def normalize_array(text: pa.Array) -> pa.Array:
    """NFKC for the rows that need it (lowercasing is the kernel's job).

    NFKC is Python's `unicodedata`, applied only to texts holding a character
    flagged NEEDS_NFKC: Arrow's utf8_normalize was ~10x slower, and a Python
    call per non-ASCII row cost more than the MinHash itself.
    """
    text = text.cast(pa.large_string())
    need = kernels.needs_nfkc(*string_buffers(text), separator_table(), NEEDS_NFKC)
    if not need.any():
        return text
    idx = np.flatnonzero(need)
    nfkc = unicodedata.normalize
    fixed = pa.array([nfkc("NFKC", s) for s in text.take(pa.array(idx)).to_pylist()], pa.large_string())
    return pc.replace_with_mask(text, pa.array(need), fixed)


def block_text(table: pa.Table, fmt: dict[str, Any]) -> pa.Array:
    """The dedup text of every row (signatures.join_columns), NFKC-normalised."""
    joined = join_columns(table, fmt["columns"])
    if isinstance(joined, pa.ChunkedArray):
        joined = joined.combine_chunks()
    return normalize_array(joined)


_SCRATCH: dict[str, np.ndarray] = {}


def _scratch(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A reused buffer per worker process: fresh arrays cost a page fault per 4 KiB touched,
    which on this kind of VM was ~20% of the signature kernel's time."""
    size = int(np.prod(shape))
    buf = _SCRATCH.get(name)
    if buf is None or buf.size < size or buf.dtype != dtype:
        # headroom: block sizes (and kept-row counts) vary a little, and each
        # regrowth would be a fresh buffer to fault in again
        buf = _SCRATCH[name] = np.empty(max(size + size // 8, 1), dtype)
    return buf[:size].reshape(shape)


_NO_ALT = (np.zeros(1, np.int64), np.zeros(1, np.uint8))


def compute_signatures(arr: pa.Array, fmt: dict[str, Any], want_sets: bool = False, scratch: bool = False):
    """Signatures (n x P uint32), shingle counts, and (want_sets) the CSR of shingle-hash sets of a text array
    (block_text's, or any normalised text).

    With `scratch` the arrays are views of per-process buffers, valid until the next call.
    """
    return _signatures([string_buffers(arr)], np.full(len(arr), -1, np.int64), _NO_ALT, fmt, want_sets, scratch)


def table_signatures(table: pa.Table, fmt: dict[str, Any], want_sets: bool = False, scratch: bool = False):
    """compute_signatures(block_text(table, fmt), ...), without building the joined, normalised text.

    The kernel reads the columns' own buffers; only rows holding a character
    that NFKC could change get their joined text built and normalised in
    Python (normalize_array's rule), which the kernel reads instead.
    Joining and replacing those rows copied every block's text twice.
    """
    cols = []
    for c in fmt["columns"]:
        col = table.column(c)
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        col = col.cast(pa.large_string())
        if col.null_count:
            col = pc.fill_null(col, "")
        cols.append(col)
    bufs = [string_buffers(c) for c in cols]
    n = table.num_rows
    need = np.zeros(n, np.bool_)
    for offsets, data in bufs:
        if n and offsets[-1] > offsets[0]:
            need |= kernels.needs_nfkc(offsets, data, separator_table(), NEEDS_NFKC)
    alt_row = np.full(n, -1, np.int64)
    alt = _NO_ALT
    idx = np.flatnonzero(need)
    if len(idx):
        take = pa.array(idx)
        parts = [c.take(take).to_pylist() for c in cols]
        nfkc = unicodedata.normalize
        alt = string_buffers(pa.array([nfkc("NFKC", "\n".join(p)) for p in zip(*parts)], pa.large_string()))
        alt_row[idx] = np.arange(len(idx))
    return _signatures(bufs, alt_row, alt, fmt, want_sets, scratch)


def _signatures(bufs, alt_row, alt, fmt, want_sets, scratch):
    n = len(alt_row)
    a, b = permutations(fmt["num_perm"], fmt["seed"])
    new = _scratch if scratch else (lambda name, shape, dtype: np.empty(shape, dtype))
    sigs = new("sigs", (n, fmt["num_perm"]), np.uint32)
    nsh = new("nsh", (n,), np.int64)
    indptr = new("indptr", (n + 1 if want_sets else 0,), np.int64)
    cap = 1
    if want_sets:  # a word shingle starts at a token, and tokens are >= 1 byte plus a separator
        size = sum(int(o[-1] - o[0]) for o, _ in bufs) + int(alt[0][-1] - alt[0][0])
        cap = size // (2 if fmt["unit"] == "word" else 1) + n * (len(bufs) + 1) + 1
    values = new("values", (cap,), np.uint32)
    used = 0
    if n:
        used = kernels.signatures(tuple(o for o, _ in bufs), tuple(d for _, d in bufs), alt_row, alt[0], alt[1],
                                  separator_table(), lowercase_table(), fmt["fold_punctuation"],
                                  fmt["ngram"], UNIT[fmt["unit"]], MODE[fmt["hash"]], a, b, sigs, nsh, indptr, values)
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
        cols = block.columns()
        score_col = task["score_column"] if task["score_column"] in cols else None
        need = sorted(set(fmt["columns"]) | {"id", "output"} | ({score_col} if score_col else set()))
        t = read_block(block, need)
        sigs, nsh, sets = table_signatures(t, fmt, want_sets=task["exact"], scratch=True)
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
    save_npy(work / f"tie-{name}.npy", sig_tie(sigs))
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
        pairs = run_pairs(keys, order, gidx, tie, task["first_ref"])
        save_npy(work / f"pairs-{band:03d}.npy", pairs)
        counts[band] = int(pairs.shape[0])
        save_json(work / f"pairs-{band:03d}.done", {"pairs": counts[band]})
    return {"pairs": counts, "seconds": round(time.perf_counter() - t0, 3)}


def sets_task(task: dict[str, Any]) -> dict[str, Any]:
    """This block's candidate rows, compact, for verification: their signatures (rows `at`... of the
    shared csig.npy) and (exact) shingle hashes.

    New blocks take the hashes from the raw sets their signature task kept
    (text order, repeats kept: jaccard_hashed needs no sorting); reference
    blocks (no kept sets) shingle those rows' text again. Gathering here, in
    the workers, leaves the verify phase's serial part one sequential read per block.
    """
    block, work, fmt = Block.from_dict(task["block"]), Path(task["work"]), task["fmt"]
    local = np.asarray(task["local"], np.int64)
    sigs = load_npy(work / f"sig-{block.name}.npy", mmap=True)
    rows = _scratch("csig", (len(local), sigs.shape[1]), sigs.dtype)
    write_npy_rows(work / "csig.npy", task["at"], np.take(sigs, local, axis=0, out=rows, mode="clip"))
    if task.get("exact", True):
        if block.ref:
            t = read_block(block, fmt["columns"])
            offsets, data = string_buffers(block_text(t, fmt))
            indptr, values = kernels.shingle_sets(offsets, data, local, separator_table(), lowercase_table(),
                                                  fmt["fold_punctuation"], fmt["ngram"], UNIT[fmt["unit"]],
                                                  MODE[fmt["hash"]])
        else:
            ptr = load_npy(work / f"setp-{block.name}.npy", mmap=True)
            raw = load_npy(work / f"setv-{block.name}.npy", mmap=True)
            starts = np.asarray(ptr[local])
            lens = np.asarray(ptr[local + 1]) - starts
            indptr = np.concatenate([[0], np.cumsum(lens)])
            values = np.asarray(raw[np.repeat(starts - indptr[:-1], lens) + np.arange(indptr[-1])])
        save_npy(work / f"csetp-{block.name}.npy", indptr)
        save_npy(work / f"csetv-{block.name}.npy", values)
    save_json(work / f"set-{block.name}.done", {"rows": int(local.shape[0])})
    return {"rows": int(local.shape[0])}


def _kept_npy(sigs: np.ndarray, keep: np.ndarray) -> memoryview:
    """The .npy file of sigs[keep], built in a reusable buffer (what np.save would write)."""
    shape = (int(keep.sum()), sigs.shape[1])
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": np.lib.format.dtype_to_descr(sigs.dtype),
                                                "fortran_order": False, "shape": shape})
    h = head.getvalue()
    buf = _scratch("npy_out", (len(h) + shape[0] * shape[1] * sigs.dtype.itemsize,), np.uint8)
    buf[:len(h)] = np.frombuffer(h, np.uint8)
    # mode="clip": with "raise" numpy fills a fresh temporary and copies it into `out`
    np.take(sigs, np.flatnonzero(keep), axis=0, out=buf[len(h):].view(sigs.dtype).reshape(shape), mode="clip")
    return memoryview(buf)


def filter_task(task: dict[str, Any]) -> dict[str, Any]:
    """Stage output shard k (kept rows with minhash_cluster, rejected rows with reasons) and write its kept signatures."""
    block, work, out = Block.from_dict(task["block"]), Path(task["work"]), Path(task["out"])
    t0 = time.perf_counter()
    d = task["decisions"]  # the block's removed rows, ascending local position
    table = records.conform(read_block(block))
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
        reasons, details, metas = rejected_columns(rej.column("meta").combine_chunks(), d, task["verify"], STAGE)
        rej = rej.set_column(rej.schema.get_field_index("meta"), "meta", metas)
        rej = (rej.append_column("drop_stage", pa.array([STAGE] * rej.num_rows, pa.string()))
               .append_column("drop_reason", reasons)
               .append_column("drop_detail", details))
    sigs = read_npy_into(work / f"sig-{block.name}.npy", lambda shape, dtype: _scratch("sig_in", shape, dtype))
    atomic_write_bytes(out / "_minhash" / f"part-{block.index:05d}.sig.npy", _kept_npy(sigs, ~dropped))
    stats = {"rows_in": n, "seconds": round(time.perf_counter() - t0, 3)}
    staged = stage_shard(out, block.index, kept, rej if rej.num_rows else None, stage=STAGE)
    return {"rows_in": n, "rows_out": kept.num_rows, "staged": staged, "stats": stats}
