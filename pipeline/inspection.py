"""What `distill inspect` reports about a dataset folder, as plain data.

Reads the folder's manifest and shards; writes nothing. Before reporting, every row group of every shard
(kept and rejected) is decoded: a shard whose footer is intact but whose pages are corrupt reads as
healthy from its metadata alone, so only a full read can tell. An unreadable shard is a DatasetError
naming each such shard (exit 3), never a report that looks healthy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from . import records
from .errors import DatasetError
from .logs import one_line
from .stages.evol_instruct.lineage import evolution_chain
from .stages.hard.report import summary as hard_summary
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


def unreadable_shards(ds: Dataset) -> list[str]:
    """'SHARD (row group G: ERROR)' for each shard of `ds` that cannot be decoded to the last row group."""
    bad = []
    for shard in ds.shards:
        g = None
        try:
            pf = ds.file(shard)
            for g in range(pf.metadata.num_row_groups):
                pf.read_row_group(g)
        except Exception as e:  # pyarrow raises OSError, ArrowInvalid and others for corrupt pages
            where = f"row group {g}: " if g is not None else ""
            bad.append(f"{Path(str(shard)).name} ({where}{one_line(e)})")
    return bad


def check_health(ds: Dataset, rej: Dataset | None) -> int:
    """The number of shards read in full; DatasetError naming every shard that is not readable."""
    problems = [(ds, unreadable_shards(ds))] + ([(rej, unreadable_shards(rej))] if rej is not None else [])
    for where, bad in problems:
        if bad:
            raise DatasetError(f"{where.path}: unhealthy: {len(bad)} of {len(where.shards)} shard(s) cannot be read: "
                               f"{'; '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}; delete the shard and its "
                               "_done marker and rerun the stage that wrote it (it redoes only that shard)")
    return len(ds.shards) + (len(rej.shards) if rej is not None else 0)


def _manifest(ds: Dataset) -> dict[str, Any]:
    try:
        return ds.manifest() or {}
    except (ValueError, UnicodeDecodeError) as e:  # json.JSONDecodeError is a ValueError
        raise DatasetError(f"{ds.path}/_manifest.json: corrupt manifest ({one_line(e)}); rerun the stage "
                           "that wrote the folder (finished shards are kept)") from None


def describe(path: str | Path, sample: int = 3, rejected: bool = False, chain: str | None = None) -> dict[str, Any]:
    ds = Dataset(path)
    manifest = _manifest(ds)
    rej = ds.rejected()
    verified = check_health(ds, rej)
    drops = manifest.get("drops") if manifest else None
    if drops is None or (rej is not None and not drops):
        drops = dict(ds.drop_counts().most_common())
    info: dict[str, Any] = {
        "path": str(ds.path),
        "stage": manifest.get("stage"),
        "complete": ds.complete,
        "healthy": True,
        "shards_verified": verified,
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
    if info["stage"] == "hard" and ds.shards:  # gaps, flags, new instructions beside their parents
        info["hard"] = hard_summary(ds, max(sample, 3))
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
