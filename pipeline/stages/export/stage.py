"""`distill export`: write a release of N rows as SFT-ready Parquet shards, a dataset card and a manifest.

Reads a dataset folder (normally the select stage's output); writes a
release folder:

    train-00000-of-000NN.parquet ...   zstd; `messages` first, or `prompt` and `completion` in the
                                       prompt_completion format (prompt_completion.py), then `reasoning` in the
                                       default field format (reasoning.py), then provenance and score columns
    test-00000-of-000MM.parquet ...    only with a held-out split
    README.md                          dataset card with the HF Hub YAML header (dataset_info: hub_info.py)
    LICENSE.md                         only with license = other and no license_link: whose terms apply
    manifest.json                      sha256, rows and bytes of every shard, counts, config (written last)

The release is the best N rows: ordered by combined score (descending,
null last), then id, which is the selection walk's own order. Rows are
written in input order. The held-out rows are drawn by a hash of (run seed,
row id), so a rerun holds out the same rows; with heldout_stable a row's
split depends on its own draw only, so it stays put as a refreshed pool grows. Every shard is written to a
temporary name and renamed; the manifest is written last, so a release
folder with a manifest.json is complete.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ... import __version__, records
from ... import logprobs as lpstore
from ...errors import DatasetError
from ...runner import Progress
from ...seeding import seed_for
from ...store import Dataset, atomic_write_bytes, atomic_write_json, atomic_write_table, check_out
from ...store.outdir import RELEASE_STARTED
from ..select.scan import ids_to_numpy
from . import card, hub_info, prompt_completion, reasoning
from .config import ExportConfig, release_columns

STAGE = "export"
MANIFEST = "manifest.json"
_BUILD_COLS = ["instruction", "input", "output", "system"]


def shard_file(split: str, i: int, total: int) -> str:
    return f"{split}-{i:05d}-of-{total:05d}.parquet"


def _scan(ds: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """(ids, scores with NaN for null, usable mask, whether some usable rows lack messages)."""
    ids, scores, usable = [], [], []
    build = False
    for b in ds.iter_batches(columns=["id", "score", "messages", "output"], batch_size=262_144):
        ids.append(ids_to_numpy(b.column("id")))
        scores.append(pc.fill_null(b.column("score").cast(pa.float64()), np.nan).to_numpy())
        has_msgs = b.column("messages").is_valid().to_numpy(zero_copy_only=False)
        has_out = pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(b.column("output"))), 0),
                               False).to_numpy(zero_copy_only=False)
        usable.append(has_msgs | has_out)
        build = build or bool((~has_msgs & has_out).any())
    if not ids:
        return np.zeros(0, "S24"), np.zeros(0), np.zeros(0, bool), False
    width = max(a.dtype.itemsize for a in ids)
    return (np.concatenate([a.astype(f"S{width}") for a in ids]), np.concatenate(scores),
            np.concatenate(usable), build)


def choose(ids: np.ndarray, scores: np.ndarray, usable: np.ndarray, n: int, heldout: int,
           seed: int, stable_share: float | None = None) -> np.ndarray:
    """Split code per input row: 0 not released, 1 train, 2 test.

    Test rows: the `heldout` released rows with the lowest hash draws, or with
    `stable_share`, every released row whose draw is below that share of the
    hash range, so a row's split does not depend on which other rows are there.
    """
    cand = np.flatnonzero(usable)
    key = np.where(np.isnan(scores[cand]), -np.inf, scores[cand])
    top = cand[np.lexsort((ids[cand], -key))[:n]]
    split = np.zeros(len(ids), np.int8)
    split[top] = 1
    if stable_share:
        draw = np.array([seed_for(seed, i.decode(), "export:heldout") for i in ids[top]], dtype=np.uint64)
        split[top[draw < np.uint64(min(int(stable_share * 2.0 ** 64), 2 ** 64 - 1))]] = 2
    elif heldout:
        draw = np.array([seed_for(seed, i.decode(), "export:heldout") for i in ids[top]], dtype=np.uint64)
        split[top[np.lexsort((ids[top], draw))[:heldout]]] = 2
    return split


def _with_messages(t: pa.Table) -> pa.Table:
    """Fill null `messages` from instruction/input/output/system (rows written before a stage set it)."""
    msgs = t.column("messages")
    if not msgs.null_count:
        return t
    cols = {c: t.column(c).to_pylist() for c in _BUILD_COLS}
    filled = [m if m is not None else records.build_messages(cols["instruction"][i] or "", cols["input"][i] or "",
                                                               cols["output"][i] or "", cols["system"][i])
              for i, m in enumerate(msgs.to_pylist())]
    return t.set_column(t.schema.get_field_index("messages"), records.SCHEMA.field("messages"),
                        pa.array(filled, records.SCHEMA.field("messages").type))


class _ShardSink:
    """Buffers one split's rows and writes full shards as they fill."""

    def __init__(self, out: Path, split: str, total_rows: int, per_shard: int, schema: pa.Schema,
                 with_logprobs: bool = False):
        self.out, self.split, self.per_shard, self.schema = out, split, per_shard, schema
        self.with_logprobs = with_logprobs
        self.side: list[dict[str, Any]] = []
        self.total = max(1, math.ceil(total_rows / per_shard)) if total_rows else 0
        self.parts: list[pa.Table] = []
        self.held = 0
        self.index = 0
        self.files: list[dict[str, Any]] = []

    def add(self, t: pa.Table) -> None:
        if t.num_rows:
            self.parts.append(t)
            self.held += t.num_rows
        while self.held >= self.per_shard:
            self._flush(self.per_shard)

    def close(self) -> None:
        if self.held:
            self._flush(self.held)

    def _flush(self, n: int) -> None:
        table = pa.concat_tables(self.parts)
        head, rest = table.slice(0, n), table.slice(n)
        name = shard_file(self.split, self.index, self.total)
        path = self.out / name
        atomic_write_table(path, head.select(self.schema.names).cast(self.schema).combine_chunks())
        self.files.append({"path": name, "split": self.split, "rows": head.num_rows,
                           "bytes": path.stat().st_size, "arrow_bytes": hub_info.arrow_bytes(path),
                           "sha256": _sha256(path)})
        if self.with_logprobs:
            stale: list[str] = []
            side = lpstore.side_table(head.column("id").to_pylist(), head.column("meta").to_pylist(),
                                      head.column("output").to_pylist(), stale)
            side_path = self.out / lpstore.side_file(name)
            atomic_write_bytes(side_path, lpstore.side_bytes(side))
            self.side.append({"path": side_path.name, "shard": name, "rows": head.num_rows, "stale_rows": len(stale),
                              "tokens": lpstore.positions(side), "bytes": side_path.stat().st_size,
                              "sha256": _sha256(side_path)})
        self.index += 1
        self.parts, self.held = ([rest] if rest.num_rows else []), rest.num_rows


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _clean(out: Path, keep: set[str]) -> None:
    for p in out.glob("*.parquet"):
        if p.name.startswith(("train-", "test-", lpstore.SIDE_PREFIX)) and p.name not in keep:
            p.unlink()


def _logprobs_summary(side: list[dict[str, Any]]) -> dict[str, Any]:
    tokens, size = sum(f["tokens"] for f in side), sum(f["bytes"] for f in side)
    return {"files": side, "tokens": tokens, "bytes": size,
            # rows whose logprobs were of an answer a later stage rewrote: written as rows without logprobs
            "stale_rows": sum(f.get("stale_rows", 0) for f in side),
            "bytes_per_token": round(size / tokens, 2) if tokens else None,
            "encoding": f"token bytes (dictionary-encoded); logprobs as uint16 steps of {lpstore.STEP} nat, "
                        "top-k lists as step differences; zstd"}


def run_export(input_path: str | Path, out: str | Path, cfg: ExportConfig, *, seed: int = 0,
               run_id: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Export `input_path` as a release into `out`; returns the manifest (also in out/manifest.json)."""
    t0 = time.monotonic()
    input_path, out = Path(input_path), Path(out)
    ds = Dataset(input_path, require_complete=True)
    ids, scores, usable, build = _scan(ds)
    available = int(usable.sum())
    asked = cfg.requested_rows()
    if asked is not None and asked > available:
        what = f"tier {cfg.tier} ({asked:,} rows)" if cfg.tier else f"{asked:,} rows"
        lacking = f" ({len(ids) - available:,} more lack an answer)" if len(ids) > available else ""
        raise DatasetError(f"{input_path}: {what} asked for, but only {available:,} rows are available{lacking}; "
                           f"use --rows {available} or a smaller tier")
    if available == 0:
        raise DatasetError(f"{input_path}: no rows with an answer to export")
    n = asked or available
    stable = float(cfg.heldout) if cfg.heldout_stable and cfg.heldout else None
    split = choose(ids, scores, usable, n, cfg.heldout_rows(n), seed, stable_share=stable)
    n_test = int((split == 2).sum())

    check_out(out, STAGE, release=True)  # empty, or a release of ours: never a user's files
    out.mkdir(parents=True, exist_ok=True)
    # Marks the folder as ours while it has no manifest, so a rerun after a kill may finish it.
    atomic_write_json(out / RELEASE_STARTED, {"stage": STAGE, "input": str(input_path)})
    (out / MANIFEST).unlink(missing_ok=True)  # the folder is incomplete until the new manifest exists
    columns = release_columns(cfg)
    schema = pa.schema([prompt_completion.FIELDS.get(c) or records.SCHEMA.field(c) for c in columns])
    sinks = {1: _ShardSink(out, "train", n - n_test, cfg.rows_per_shard, schema, cfg.with_logprobs),
             2: _ShardSink(out, "test", n_test, cfg.rows_per_shard, schema, cfg.with_logprobs)}
    carried = list(dict.fromkeys(columns + (["id", "meta", "output"] if cfg.with_logprobs else [])))  # side file reads
    read_cols = list(dict.fromkeys([c for c in carried if c not in prompt_completion.COLUMNS]
                                   + ["messages", "id", "origin", "teacher_model", "reasoning"]
                                   + (_BUILD_COLS if build else [])))
    chars: list[np.ndarray] = []
    origins: Counter = Counter()
    teachers: Counter = Counter()
    bar = Progress(len(ids), STAGE, progress)
    offset = 0
    try:
        for batch in ds.iter_batches(columns=read_cols, batch_size=65_536):
            codes = split[offset: offset + batch.num_rows]
            offset += batch.num_rows
            if codes.any():
                t = pa.Table.from_batches([batch])
                for code, sink in sinks.items():
                    mask = codes == code
                    if mask.any():
                        part = _with_messages(t.filter(pa.array(mask))) if build else t.filter(pa.array(mask))
                        origins.update(_counts(part.column("origin")))
                        teachers.update(_counts(part.column("teacher_model")))
                        chars.append(reasoning.lengths(part))
                        if cfg.reasoning == "think_tags":
                            part = reasoning.with_think_tags(part)
                        if cfg.format == "prompt_completion":
                            part = prompt_completion.with_prompt_completion(part)
                        sink.add(part.select(carried))
            bar.update(batch.num_rows)
        for sink in sinks.values():
            sink.close()
    finally:
        bar.close()
    files = sinks[1].files + sinks[2].files
    side = sinks[1].side + sinks[2].side
    _clean(out, {f["path"] for f in files + side})
    released = scores[split > 0]
    manifest = {
        "stage": STAGE,
        "code_version": _version(),
        "created_at": records.now_utc().isoformat(),
        "run_id": run_id,
        "input": str(input_path),
        "request": {"tier": cfg.tier, "rows": cfg.rows},
        "rows_in": len(ids),
        "available_rows": available,
        "rows": n,
        "rows_out": n,
        "splits": {"train": n - n_test, **({"test": n_test} if n_test else {})},
        "files": files,
        "format": cfg.format,
        "columns": columns,
        **({"logprobs": _logprobs_summary(side)} if cfg.with_logprobs else {}),
        "reasoning": reasoning.summary(cfg.reasoning, np.concatenate(chars) if chars else np.zeros(0, np.int64), n),
        "sources": dict(origins.most_common()),
        "teachers": dict(teachers.most_common()),
        "score": _summary(released),
        "license": cfg.license,
        **card.license_fields(cfg),
        "config": cfg.model_dump(mode="json"),
        "upstream": card.upstream_chain(input_path),
        "versions": card.pool_versions(input_path),
        "seconds": round(time.monotonic() - t0, 3),
    }
    card.write_card(out, manifest, cfg, schema)
    atomic_write_json(out / MANIFEST, manifest)  # last: its presence means the release is complete
    (out / RELEASE_STARTED).unlink(missing_ok=True)
    return manifest


def _counts(col: pa.ChunkedArray) -> dict[str, int]:
    vc = pc.value_counts(pc.fill_null(col, "unknown"))
    return {v["values"].as_py(): v["counts"].as_py() for v in vc}


def _summary(x: np.ndarray) -> dict[str, Any]:
    x = x[~np.isnan(x)]
    if not len(x):
        return {"scored_rows": 0}
    return {"scored_rows": int(len(x)), "min": float(x.min()), "median": float(np.median(x)),
            "mean": round(float(x.mean()), 4), "max": float(x.max())}


def _version() -> str:
    return __version__
