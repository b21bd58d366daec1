"""Evolution chains: a row and its ancestors, from the root to the row, for `distill inspect`.

Reads one or more dataset folders (kept rows and their `rejected/` rows, which
keep their lineage too); writes nothing. Two streaming passes over the `id`
and `parent_id` columns, then one over the rows of the chain, so a large
dataset is never loaded whole.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Iterable

from ...records import get_meta
from ...store import Dataset, DatasetError


def _datasets(paths: Iterable[str | Path]) -> list[Dataset]:
    out = []
    for p in paths:
        ds = Dataset(p)
        out.append(ds)
        rej = ds.rejected()
        if rej is not None:
            out.append(rej)
    return out


def _resolve(row_id: str, parents: dict[str, str | None]) -> str:
    if row_id in parents:
        return row_id
    hits = [i for i in parents if i.startswith(row_id)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise DatasetError(f"no row with id {row_id!r} in the given datasets")
    raise DatasetError(f"id prefix {row_id!r} matches {len(hits)} rows ({', '.join(sorted(hits)[:3])}, ...); give more characters")


def evolution_chain(dataset_paths: str | Path | Iterable[str | Path], row_id: str) -> list[dict[str, Any]]:
    """The row `row_id` (an id or a unique prefix) and its ancestors, root first.

    Ancestors are looked up in every given dataset, kept rows before rejected
    ones. A chain whose root lies outside the given datasets starts at the
    oldest ancestor found (its `parent_id` then points outside).
    """
    if isinstance(dataset_paths, (str, Path)):
        dataset_paths = [dataset_paths]
    datasets = _datasets(dataset_paths)
    parents: dict[str, str | None] = {}
    for ds in datasets:
        for batch in ds.iter_batches(columns=["id", "parent_id"]):
            for i, p in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
                parents.setdefault(i, p)
    start = _resolve(row_id, parents)
    chain = [start]
    seen = {start}
    while (parent := parents.get(chain[-1])) and parent in parents and parent not in seen:
        chain.append(parent)
        seen.add(parent)
    wanted = set(chain)
    found: dict[str, dict[str, Any]] = {}
    for ds in datasets:
        for row in ds.iter_rows():
            if row["id"] in wanted and row["id"] not in found:
                found[row["id"]] = row
        if len(found) == len(wanted):
            break
    return [found[i] for i in reversed(chain)]


def _clip(text: str | None, width: int) -> str:
    t = " ".join((text or "").split())
    return t if len(t) <= width else t[: width - 1] + "\u2026"


def format_chain(chain: list[dict[str, Any]], width: int = 300) -> str:
    """A readable chain: one block per row, root first, with drop reasons for rejected rows."""
    if not chain:
        return "(empty chain)"
    lines = []
    first = chain[0]
    if first.get("parent_id"):
        lines.append(f"(parent {first['parent_id']} of the oldest row is not in the given datasets)")
    for row in chain:
        meta = get_meta(row, "evol_instruct", {}) or {}
        head = f"round {row.get('round') or 0}  {row['id']}  {row.get('origin') or '?'}"
        if meta.get("data_format"):
            head += f" ({meta['data_format']})"
        if row.get("parent_id"):
            head += f"  parent {row['parent_id']}"
        lines.append(head)
        lines.append(textwrap.indent(f"instruction: {_clip(row.get('instruction'), width)}", "  "))
        if row.get("input"):
            lines.append(textwrap.indent(f"input: {_clip(row['input'], width)}", "  "))
        if row.get("output"):
            lines.append(textwrap.indent(f"output: {_clip(row['output'], width)}", "  "))
        if row.get("drop_reason"):
            lines.append(f"  DROPPED by {row.get('drop_stage')}: {row['drop_reason']} ({row.get('drop_detail') or ''})")
    return "\n".join(lines)
