"""Helpers for the MinHash tests: small datasets written through the real store."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import records
from pipeline.store import Dataset, DatasetWriter


def write_dataset(path: Path, rows: list[dict], shard_rows: int = 1000) -> Path:
    w = DatasetWriter(path, "import")
    for i in range(0, len(rows), shard_rows):
        w.write_shard(i // shard_rows, rows[i:i + shard_rows])
    w.write_manifest()
    return path


def row(instruction: str, output: str = "", input: str = "", **fields) -> dict:
    return records.new_row(instruction, input, output, origin="import", **fields)


def words(rng: np.random.Generator, n: int, vocab: int = 50_000) -> list[str]:
    """n random made-up words (distinct words make Jaccard values computable by hand)."""
    return [f"w{x}" for x in rng.integers(0, vocab, n)]


def synthetic_rows(n_base: int, n_copies: int, seed: int = 0) -> list[dict]:
    """Base rows of random words plus perturbed copies (word edits, truncations, case)."""
    rng = np.random.default_rng(seed)
    bases = [" ".join(words(rng, int(rng.integers(40, 120)))) for _ in range(n_base)]
    rows = [row(f"task {i}", b) for i, b in enumerate(bases)]
    for j in range(n_copies):
        src = int(rng.integers(0, n_base))
        w = bases[src].split()
        kind = j % 3
        if kind == 0:
            for _ in range(int(rng.integers(1, 6))):
                w[int(rng.integers(0, len(w)))] = f"x{rng.integers(0, 10**6)}"
        elif kind == 1:
            w = w[: max(1, int(len(w) * rng.uniform(0.6, 0.97)))]
        else:
            w = [t.upper() for t in w]
        rows.append(row(f"copy {j} task {src}", " ".join(w)))
    return rows


def outcome(out: Path) -> tuple[dict[str, str | None], list[dict]]:
    """id -> duplicate_of (None when kept), and the cluster table sorted by id."""
    import pyarrow.parquet as pq
    ds = Dataset(out)
    res: dict[str, str | None] = {r["id"]: None for r in ds.iter_rows(["id"])}
    rej = ds.rejected()
    if rej is not None:
        for r in rej.iter_rows(["id", "meta"]):
            res[r["id"]] = records.get_meta(r, "minhash")["duplicate_of"]
    table = pq.read_table(out / "clusters.parquet").drop_columns(["row"]).to_pylist()
    return res, sorted(table, key=lambda r: r["id"])
