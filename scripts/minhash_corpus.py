"""Benchmark corpora for `bench_minhash.py`: real-derived rows with known perturbations, and exact ground truth.

Rows are built from the words and sentences of ../shared/data (Alpaca and
Dolly rows): a base row is a real instruction and an output of 5-7 real
sentences in which ~15% of the words are swapped for other real words (so
base rows that share a sentence do not share its 5-grams). A share of rows are
copies of a base row with one perturbation: exact copy, case and whitespace
edits, word edits (1-10 words replaced), truncation (60-95% kept), or
reordering (the output cut in three and the parts permuted). Rows are
shuffled within each chunk of 500k, so copies are spread across blocks.

Everything is vectorised (numpy over flat word-id arrays, Arrow string
kernels to join them) so 10M rows build in a few minutes. The ground truth
(`ground_truth`) is exact: every pair with 5-gram Jaccard >= t found by
prefix filtering over globally frequency-ordered shingle sets, then verified
on the full sets; nothing in it uses MinHash.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

KINDS = ("exact", "case_ws", "word_edit", "truncate", "reorder")


def load_pools(shared: Path):
    rows = json.loads((shared / "alpaca_helpfulness_2k.json").read_text())
    rows += json.loads((shared / "dolly_3k.json").read_text())
    instructions = [r["instruction"].strip() for r in rows if r.get("instruction", "").strip()]
    vocab: dict[str, int] = {}
    sentences: list[list[int]] = []
    for r in rows:
        for field in ("input", "output"):
            for sent in re.split(r"(?<=[.!?])\s+|\n+", r.get(field) or ""):
                words = sent.split()
                if 3 <= len(words) <= 60:
                    sentences.append([vocab.setdefault(w, len(vocab)) for w in words])
    words = pa.array(list(vocab), pa.large_string())
    lens = np.array([len(s) for s in sentences], np.int64)
    off = np.concatenate([[0], np.cumsum(lens)])
    flat = np.concatenate([np.array(s, np.int32) for s in sentences])
    return pa.array(instructions, pa.large_string()), words, flat, off, lens


def _gather(flat: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate segments flat[starts[i]:starts[i]+lens[i]]; returns (values, offsets)."""
    off = np.concatenate([[0], np.cumsum(lens)])
    pos = np.repeat(starts - off[:-1], lens) + np.arange(off[-1])
    return flat[pos], off


def _bases(rng, n, pools):
    instr, words, sflat, soff, slens = pools
    k = rng.integers(5, 8, n)
    sent = rng.integers(0, len(slens), k.sum())
    row_of = np.repeat(np.arange(n), k)
    wl = slens[sent]
    vals, _ = _gather(sflat, soff[sent], wl)
    lens = np.bincount(row_of, weights=wl, minlength=n).astype(np.int64)
    swap = rng.random(len(vals)) < 0.15
    vals[swap] = rng.integers(0, len(words), swap.sum())
    return rng.integers(0, len(instr), n), vals, np.concatenate([[0], np.cumsum(lens)])


def _copies(rng, src_instr, vals, off, src, kinds, n_words):
    """Perturbed copies of rows `src` of a chunk; returns instr idx, word ids, offsets, case_ws mask."""
    lens = off[src + 1] - off[src]
    starts = off[src].copy()
    new_lens = lens.copy()
    trunc = kinds == KINDS.index("truncate")
    new_lens[trunc] = np.maximum(1, (lens[trunc] * rng.uniform(0.6, 0.95, trunc.sum())).astype(np.int64))
    cv, coff = _gather(vals, starts, new_lens)
    # reorder: cut at two points, emit parts as (2, 0, 1)
    for i in np.flatnonzero(kinds == KINDS.index("reorder")):
        seg = cv[coff[i]:coff[i + 1]]
        a, b = sorted(rng.integers(1, max(2, len(seg)), 2))
        cv[coff[i]:coff[i + 1]] = np.concatenate([seg[b:], seg[:a], seg[a:b]])
    edit = np.flatnonzero(kinds == KINDS.index("word_edit"))
    m = rng.integers(1, 11, len(edit))
    rows = np.repeat(edit, m)
    pos = coff[rows] + (rng.random(len(rows)) * (coff[rows + 1] - coff[rows])).astype(np.int64)
    cv[pos] = rng.integers(0, n_words, len(pos))
    return src_instr[src], cv, coff, kinds == KINDS.index("case_ws")


def _strings(pools, instr_idx, vals, off, case_ws):
    instr_pool, words = pools[0], pools[1]
    lists = pa.LargeListArray.from_arrays(pa.array(off, pa.int64()), words.take(pa.array(vals)))
    out = pc.binary_join(lists, pa.scalar(" ", pa.large_string()))
    instr = instr_pool.take(pa.array(instr_idx))
    if case_ws.any():
        mask = pa.array(case_ws)
        instr = pc.replace_with_mask(instr, mask, pc.utf8_upper(pc.filter(instr, mask)))
        out = pc.replace_with_mask(out, mask, pc.replace_substring(pc.filter(out, mask), " ", "  \n ", max_replacements=4))
    return instr, out


def build(n: int, out_dir: Path, shared: Path, *, dup_rate: float = 0.2, chunk: int = 500_000, seed: int = 0) -> dict:
    """Write an n-row dataset folder (record schema) to out_dir; returns counts by perturbation kind."""
    from pipeline import records
    from pipeline.store import DatasetWriter

    pools = load_pools(shared)
    rng = np.random.default_rng(seed)
    n_words = len(pools[1])
    chunks = max(1, -(-n // chunk))
    per = [n // chunks + (1 if i < n % chunks else 0) for i in range(chunks)]
    writer = DatasetWriter(out_dir, "import", plan={"bench": "minhash", "rows": n, "seed": seed})
    counts = dict.fromkeys(KINDS, 0)
    row0 = 0
    for c, n_c in enumerate(per):
        n_copy = int(round(n_c * dup_rate))
        n_base = n_c - n_copy
        bi, bv, bo = _bases(rng, n_base, pools)
        src = rng.integers(0, n_base, n_copy)
        kinds = rng.integers(0, len(KINDS), n_copy)
        for k, v in zip(*np.unique(kinds, return_counts=True)):
            counts[KINDS[k]] += int(v)
        parts = [_strings(pools, bi, bv, bo, np.zeros(n_base, bool)),
                 _strings(pools, *_copies(rng, bi, bv, bo, src, kinds, n_words))]
        instr = pa.concat_arrays([p[0] for p in parts])
        out = pa.concat_arrays([p[1] for p in parts])
        perm = pa.array(rng.permutation(n_c))  # copies spread over the chunk (and so over blocks)
        instr, out = instr.take(perm), out.take(perm)
        ids = pa.array(np.char.mod("r%011d", np.arange(row0, row0 + n_c)).astype(object), pa.string())
        t = pa.table({"id": ids, "origin": pa.array(["bench"] * n_c, pa.string()),
                      "instruction": instr.cast(pa.string()), "input": pa.array([""] * n_c, pa.string()),
                      "output": out.cast(pa.string())})
        t = records.conform(t)
        for j in range(0, n_c, 100_000):  # shards of 100k rows, as a pipeline stage would write them
            writer.write_shard(len(writer.done_markers()), t.slice(j, 100_000))
        row0 += n_c
    writer.write_manifest(bench_counts=counts)
    return {"rows": row0, "copies": counts}


@njit(cache=True)
def jaccard_sorted(values, a0, a1, b0, b1):
    """Jaccard of the sorted distinct values in values[a0:a1] and values[b0:b1]."""
    inter = 0
    i, j = a0, b0
    while i < a1 and j < b1:
        x, y = values[i], values[j]
        if x == y:
            inter += 1
            i += 1
            j += 1
        elif x < y:
            i += 1
        else:
            j += 1
    union = (a1 - a0) + (b1 - b0) - inter
    return inter / union if union > 0 else 0.0


def ground_truth(dataset: Path, threshold: float = 0.7, ngram: int = 5) -> np.ndarray:
    """All row pairs (by row number) with exact shingle-set Jaccard >= threshold, as an (m, 2) array."""
    from pipeline.stages.minhash import kernels, signatures
    from pipeline.stages.minhash.phases import block_text, string_buffers
    from pipeline.store import Dataset

    t = Dataset(dataset).read(["instruction", "input", "output"])
    fmt = {"columns": ["instruction", "input", "output"]}
    offsets, data = string_buffers(block_text(t, fmt))
    # SHA-1 shingle hashes: independent of the fast hash the stage uses by default.
    indptr, vals = kernels.shingle_sets(offsets, data, np.arange(t.num_rows), signatures.separator_table(),
                                        signatures.lowercase_table(), True,
                                        ngram, kernels.UNIT_WORD, kernels.MODE_SHA1)
    sizes = np.diff(indptr)
    row = np.repeat(np.arange(t.num_rows), sizes)
    uniq, inv, freq = np.unique(vals, return_inverse=True, return_counts=True)
    order = np.lexsort((inv, freq[inv], row))  # per row: rarest shingle first, ties by value
    rank_in_row = np.arange(len(vals)) - indptr[row[order]]
    prefix = sizes - np.ceil(threshold * sizes - 1e-9).astype(np.int64) + 1
    keep = rank_in_row < prefix[row[order]]
    tok, r = inv[order][keep], row[order][keep]
    o = np.lexsort((r, tok))
    tok, r = tok[o], r[o]
    bounds = np.flatnonzero(np.diff(tok)) + 1
    pairs = set()
    for grp in np.split(r, bounds):
        if len(grp) > 1:
            for i in range(len(grp)):
                for j in range(i + 1, len(grp)):
                    pairs.add((int(grp[i]), int(grp[j])))
    out = []
    for a, b in pairs:
        if min(sizes[a], sizes[b]) >= threshold * max(sizes[a], sizes[b]) - 1e-9:
            if jaccard_sorted(vals, indptr[a], indptr[a + 1], indptr[b], indptr[b + 1]) >= threshold:
                out.append((a, b))
    return np.array(sorted(out), np.int64).reshape(-1, 2)
