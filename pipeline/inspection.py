"""What `distill inspect` reports about a dataset folder, as plain data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import records
from .store import Dataset, DatasetError

_SAMPLE_COLUMNS = ["id", "parent_id", "origin", "round", "task_kind", "instruction", "input", "output",
                   "system", "strategy", "messages", "score", "drop_stage", "drop_reason", "drop_detail"]


def _sample(ds: Dataset, n: int) -> list[dict[str, Any]]:
    out = []
    for row in ds.iter_rows():
        if len(out) >= n:
            break
        out.append({k: row.get(k) for k in _SAMPLE_COLUMNS if k in row})
    return out


def find_chain(paths: list[Path], row_id: str) -> list[dict[str, Any]]:
    """Rows from `row_id` up to its root, root first, looked up in `paths` (kept and rejected)."""
    index: dict[str, dict[str, Any]] = {}
    for p in paths:
        for ds in filter(None, (Dataset(p), Dataset(p).rejected())):
            for row in ds.iter_rows(columns=["id", "parent_id", "root_id", "origin", "round", "instruction"]):
                index.setdefault(row["id"], row)
    if row_id not in index:
        raise DatasetError(f"row id {row_id} not found in {', '.join(map(str, paths))}")
    chain = [index[row_id]]
    while chain[-1].get("parent_id") and chain[-1]["parent_id"] in index and len(chain) < 1000:
        chain.append(index[chain[-1]["parent_id"]])
    return list(reversed(chain))


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
        "rejected_rows": rej.num_rows() if rej else 0,
        "drops": drops,
        "schema": [(n, str(t), d) for n, t, d in records.COLUMNS + records.DROP_COLUMNS],
        "manifest": manifest,
    }
    source = rej if rejected else ds
    info["sample"] = _sample(source, sample) if source is not None else []
    if chain:
        # Lineage spans the folders of one run: look in this folder's siblings too.
        siblings = [p for p in ds.path.parent.iterdir() if p.is_dir() and _is_dataset(p)]
        info["chain"] = find_chain(siblings or [ds.path], chain)
    return info


def _is_dataset(p: Path) -> bool:
    try:
        Dataset(p)
        return True
    except DatasetError:
        return False
