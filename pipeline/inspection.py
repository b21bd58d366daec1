"""What `distill inspect` reports about a dataset folder, as plain data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from . import records
from .errors import DatasetError
from .stages.evol_instruct.lineage import evolution_chain
from .store import Dataset

_SAMPLE_COLUMNS = ["id", "parent_id", "origin", "round", "task_kind", "instruction", "input", "output",
                   "system", "strategy", "messages", "score", "drop_stage", "drop_reason", "drop_detail"]


def _sample(ds: Dataset, n: int) -> list[dict[str, Any]]:
    out = []
    for row in ds.iter_rows():
        if len(out) >= n:
            break
        out.append({k: row.get(k) for k in _SAMPLE_COLUMNS if k in row})
    return out


def _rounds(ds: Dataset) -> tuple[dict[int, dict[str, int]], str | None]:
    """Rows per evolution round and origin, and the id of one row of the deepest round (None without evolutions)."""
    if "round" not in ds.schema.names or not ds.shards:
        return {}, None
    deepest = max((pc.max(b.column(0)).as_py() or 0 for b in ds.iter_batches(columns=["round"])), default=0)
    if not deepest:  # most datasets: one integer column read, nothing more
        return {}, None
    t = ds.read(columns=["id", "round", "origin"])
    counts: dict[int, dict[str, int]] = {}
    for g in t.group_by(["round", "origin"]).aggregate([("id", "count")]).to_pylist():
        counts.setdefault(int(g["round"] or 0), {})[g["origin"] or "?"] = g["id_count"]
    leaf = t.filter(pc.equal(t.column("round"), deepest)).column("id")[0].as_py()
    return dict(sorted(counts.items())), leaf


def describe(path: str | Path, sample: int = 3, rejected: bool = False, chain: str | None = None) -> dict[str, Any]:
    ds = Dataset(path)
    manifest = ds.manifest() or {}
    rej = ds.rejected()
    drops = manifest.get("drops") if manifest else None
    if drops is None or (rej is not None and not drops):
        drops = dict(ds.drop_counts().most_common())
    info: dict[str, Any] = {
        "path": str(ds.path),
        "stage": manifest.get("stage"),
        "complete": ds.complete,
        "rows": ds.num_rows(),
        "shards": len(ds.shards),
        "unmarked_shards": ds.unmarked,  # part files with no done marker: not data (a writer died before its commit)
        "rejected_rows": rej.num_rows() if rej else 0,
        "drops": drops,
        "schema": [(n, str(t), d) for n, t, d in records.COLUMNS + records.DROP_COLUMNS],
        "manifest": manifest,
    }
    source = rej if rejected else ds
    info["sample"] = _sample(source, sample) if source is not None else []
    info["rounds"], deepest = _rounds(ds)
    if chain or deepest:
        # Lineage spans the folders of one run: look in this folder's siblings too.
        siblings = [p for p in ds.path.parent.iterdir() if p.is_dir() and _is_dataset(p)]
        info["chain"] = evolution_chain(siblings or [ds.path], chain or deepest)
        info["chain_of"] = "asked" if chain else "deepest"
    return info


def _is_dataset(p: Path) -> bool:
    try:
        Dataset(p)
        return True
    except DatasetError:
        return False
