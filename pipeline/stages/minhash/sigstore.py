"""The signature store kept with a deduplicated dataset, for incremental (`--against`) runs.

`<dataset>/_minhash/store.json` says which signature format the store holds
(columns, shingling, hash mode, permutations, seed) and lists segments. Each
segment pairs a Parquet file of rows (for their ids, and their text when exact
verification needs it) with a `.npy` of their signatures, row for row:

    {"format": {...}, "segments": [{"rows": "part-00000.parquet", "sig": "_minhash/part-00000.sig.npy", "n": 812}]}

Paths are relative to the dataset folder, or absolute for segments added from
another run's output (`add_segments`), which is how a nightly run registers its
new rows' signatures with the published dataset without rewriting its shards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from ...store import DatasetError, atomic_write_json, read_json
from .blocks import Block

STORE_DIR = "_minhash"
STORE_FILE = "store.json"


def store_path(dataset: Path) -> Path:
    return Path(dataset) / STORE_DIR / STORE_FILE


def load_store(dataset: str | Path) -> dict[str, Any]:
    p = store_path(Path(dataset))
    if not p.exists():
        raise DatasetError(f"{dataset}: has no stored MinHash signatures ({STORE_DIR}/{STORE_FILE}); "
                           "--against needs a dataset written by `distill minhash` (or one with signatures added)")
    return read_json(p)


def check_format(dataset: str | Path, store: dict[str, Any], expected: dict[str, Any]) -> None:
    got = store.get("format", {})
    diff = {k: (got.get(k), v) for k, v in expected.items() if got.get(k) != v}
    if diff:
        changes = ", ".join(f"{k}: stored {a!r}, this run {b!r}" for k, (a, b) in sorted(diff.items()))
        raise DatasetError(f"{dataset}: stored signatures are not comparable with this run's ({changes}); "
                           "use the same [minhash] shingling and signature settings")


def _resolve(dataset: Path, p: str) -> str:
    q = Path(p)
    return str(q if q.is_absolute() else dataset / q)


def ref_blocks(datasets: list[str], expected: dict[str, Any], first_global: int) -> list[Block]:
    """One reference block per stored segment of every `--against` dataset."""
    blocks: list[Block] = []
    start = first_global
    for ds in datasets:
        root = Path(ds)
        store = load_store(root)
        check_format(ds, store, expected)
        for seg in store.get("segments", []):
            rows, sig = _resolve(root, seg["rows"]), _resolve(root, seg["sig"])
            n = int(seg["n"])
            if not Path(rows).exists() or not Path(sig).exists():
                raise DatasetError(f"{ds}: store segment is missing its files ({rows}, {sig})")
            if pq.ParquetFile(rows).metadata.num_rows != n:
                raise DatasetError(f"{ds}: {rows} has {pq.ParquetFile(rows).metadata.num_rows} rows but its stored signatures cover {n}")
            shape = np.load(sig, mmap_mode="r").shape
            if shape != (n, expected["num_perm"]):
                raise DatasetError(f"{ds}: {sig} holds signatures of shape {shape}, expected ({n}, {expected['num_perm']})")
            if n:
                blocks.append(Block(len(blocks), start, n, [(rows, 0, n)], ref=True, sig_path=sig))
                start += n
    return blocks


def write_store(out: Path, fmt: dict[str, Any], segments: list[dict[str, Any]]) -> None:
    atomic_write_json(store_path(out), {"format": fmt, "segments": segments})


def add_segments(target: str | Path, fmt: dict[str, Any], out: Path, segments: list[dict[str, Any]]) -> int:
    """Register `out`'s segments (made absolute) in `target`'s store; returns how many were new."""
    target = Path(target)
    store = load_store(target)
    check_format(target, store, fmt)
    have = {(_resolve(target, s["rows"]), _resolve(target, s["sig"])) for s in store["segments"]}
    added = 0
    for seg in segments:
        rows, sig = str((out / seg["rows"]).resolve()), str((out / seg["sig"]).resolve())
        if (rows, sig) not in have:
            store["segments"].append({"rows": rows, "sig": sig, "n": seg["n"]})
            added += 1
    atomic_write_json(store_path(target), store)
    return added
