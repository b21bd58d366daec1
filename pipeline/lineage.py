"""The chain of dataset folders behind one: each `_manifest.json`'s `input`, followed upstream.

Reads manifests only. Used by the dataset card (the funnel of every upstream
stage) and by the stored-embeddings lookup (a later stage's output reuses
the vectors a semdedup folder upstream stored).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from .store import read_json


def upstream(path: str | Path, max_depth: int = 20) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(folder, its manifest or {}) for `path`, then for the folder its manifest names as input, and so on.

    Stops after a folder without a manifest or an input, at `max_depth`
    folders, and at a folder seen before (a loop).
    """
    p: Path | None = Path(path)
    seen: set[Path] = set()
    while p is not None and len(seen) < max_depth and p.resolve() not in seen:
        seen.add(p.resolve())
        mf = p / "_manifest.json"
        m = read_json(mf) if mf.exists() else {}
        yield p, m
        p = Path(m["input"]) if m.get("input") else None
