"""Embeddings stored next to a dataset, one file pair per input shard, for resume and reuse.

    <dataset>/_embeddings/_info.json          embedder name, dim, embedded fields
    <dataset>/_embeddings/part-NNNNN.vecs.npy float16 rows, in the shard's row order
    <dataset>/_embeddings/part-NNNNN.ids.npy  the rows' ids (written last: marks the shard done)

The semdedup stage writes them for every input row (kept and dropped) as its
first phase, the refresh pool keeps them for every published row; semdedup's
`--against DATASET` and select's diversity walk read them back with
`load_embeddings` (restricted to the ids a dataset still holds), or through
`stored_for`, which also looks upstream.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from ..lineage import upstream
from ..store import atomic_write_json, read_json
from ..store.atomic import atomic_write_npy
from .cache import from_f16

EMB_DIR = "_embeddings"
INFO = "_info.json"


def emb_dir(dataset: str | Path) -> Path:
    return Path(dataset) / EMB_DIR


def _paths(dataset: str | Path, index: int) -> tuple[Path, Path]:
    d = emb_dir(dataset)
    return d / f"part-{index:05d}.vecs.npy", d / f"part-{index:05d}.ids.npy"


def write_info(dataset: str | Path, name: str, dim: int, fields: list[str]) -> None:
    info = {"embedder": name, "dim": dim, "fields": fields}
    p = emb_dir(dataset) / INFO
    if p.exists():
        old = read_json(p)
        if old != info:
            raise ValueError(f"{p}: stored embeddings are {old}, this run wants {info}")
        return
    atomic_write_json(p, info)


def read_info(dataset: str | Path) -> dict | None:
    p = emb_dir(dataset) / INFO
    return read_json(p) if p.exists() else None


def has_shard(dataset: str | Path, index: int) -> bool:
    return _paths(dataset, index)[1].exists()


def write_shard(dataset: str | Path, index: int, ids: list[str], vectors: np.ndarray) -> None:
    vecs_p, ids_p = _paths(dataset, index)
    atomic_write_npy(vecs_p, np.asarray(vectors, dtype=np.float16))
    atomic_write_npy(ids_p, np.asarray(ids, dtype="U"))


def read_shard(dataset: str | Path, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, float32 vectors) of one stored shard."""
    vecs_p, ids_p = _paths(dataset, index)
    return np.load(ids_p), from_f16(np.load(vecs_p))


def shard_indices(dataset: str | Path) -> list[int]:
    d = emb_dir(dataset)
    if not d.exists():
        return []
    return sorted(int(p.name[5:10]) for p in d.glob("part-*.ids.npy"))


def load_embeddings(dataset: str | Path, ids: Iterable[str] | None = None,
                    embedder_name: str | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """(ids, float32 unit vectors) stored with `dataset`, or None when there are none (or another embedder's).

    With `ids`, only rows whose id is in it are returned (e.g. the rows a
    downstream dataset kept); each id once, at its first stored position.
    """
    info = read_info(dataset)
    if info is None or (embedder_name is not None and info["embedder"] != embedder_name):
        return None
    want = set(ids) if ids is not None else None
    all_ids, all_vecs = [], []
    for k in shard_indices(dataset):
        sid, vec = read_shard(dataset, k)
        if want is not None:
            mask = np.fromiter((i in want for i in sid.tolist()), bool, len(sid))
            sid, vec = sid[mask], vec[mask]
        all_ids.append(sid)
        all_vecs.append(vec)
    if not all_ids:
        return np.zeros(0, dtype="U24"), np.zeros((0, info["dim"]), np.float32)
    ids_arr = np.concatenate(all_ids)
    vecs = np.concatenate(all_vecs)
    _, first = np.unique(ids_arr, return_index=True)
    first.sort()
    return ids_arr[first], vecs[first]


def stored_for(path: str | Path, ids: list[str], name: str,
               fields: list[str]) -> tuple[np.ndarray, np.ndarray, str] | None:
    """Stored embeddings covering every id of the dataset at `path`: its own, or an upstream folder's.

    A published dataset is often a later stage's output (score, select) whose
    rows all passed through a semdedup folder upstream; the `input` recorded
    in each manifest leads there. Only vectors of the same embedder and the
    same embedded fields count. Returns (ids, vectors, folder) or None.
    """
    want = len(set(ids))
    for p, _ in upstream(path):
        info = read_info(p)
        if info and info["fields"] == fields and info["embedder"] == name:
            got = load_embeddings(p, ids=ids, embedder_name=name)
            if got is not None and len(got[0]) == want:
                return got[0], got[1], str(p)
    return None
