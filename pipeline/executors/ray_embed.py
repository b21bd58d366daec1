"""Semdedup's embed phase on Ray actors: same shards, same files, same return value.

`embed_phase_ray` is `pipeline.stages.semdedup.stage.embed_phase` with the
embedding done by a pool of actors, each loading the model once (through the
stage's own `load_embedder` and encoder cache: the cache writes uniquely named
segments, so workers sharing it never clobber each other). The driver reads
the input shards (the same cut as the local phase), skips shards already in
`<out>/_embeddings/`, sends the rest's texts to the actors, which write
`embstore` shards exactly as the local phase does; then the driver loads every
shard in order. Search, clustering and writing stay in the driver: they need
all vectors at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .ray_runtime import connect, task_error_cause


@dataclass(frozen=True)
class EncoderFactory:
    """Builds semdedup's encoder (model + embedding cache) inside a worker."""

    cfg: Any          # SemdedupConfig
    workdir: str

    def __call__(self):
        from ..stages.semdedup.api import _encoder
        from ..stages.semdedup.embedder import load_embedder
        c = self.cfg
        emb = load_embedder(c.model, c.fast, c.device, batch_size=c.batch_size,
                            cache_dir=Path(c.model_cache_dir) if c.model_cache_dir else None)
        return _encoder(emb, c, Path(self.workdir))


class EmbedWorker:
    def __init__(self, factory: EncoderFactory):
        self.factory = factory
        self.encoder = None

    def embed(self, out: str, index: int, ids: list[str], texts: list[str]) -> int:
        from ..stages.semdedup import embstore
        if self.encoder is None:
            self.encoder = self.factory()
        embstore.write_shard(out, index, ids, np.asarray(self.encoder.encode(texts)))
        return len(ids)


def embed_phase_ray(ds: Any, out: Path, cfg: Any, workdir: Path, shard_rows: int, limit: int | None, *,
                    ray_address: str | None = None, workers: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """(ids, stored vectors, shards resumed), as `embed_phase` returns them."""
    from ..stages.semdedup import embstore
    from ..stages.semdedup.stage import iter_chunks, row_texts

    ray = connect(ray_address)
    gpu = cfg.device not in ("cpu",) and ray.cluster_resources().get("GPU", 0) >= 1
    n = workers or max(int(ray.cluster_resources().get("GPU" if gpu else "CPU", 1)), 1)
    actor = ray.remote(EmbedWorker).options(num_cpus=1, num_gpus=1 if gpu else 0, max_restarts=3, max_task_retries=3)
    factory = EncoderFactory(cfg, str(Path(workdir).resolve()))
    actors: list[Any] = []
    pending: dict[Any, int] = {}
    indices: list[int] = []
    resumed = 0
    try:
        for k, table in iter_chunks(ds, shard_rows, limit, columns=["id", *cfg.fields]):
            indices.append(k)
            if embstore.has_shard(out, k) and len(embstore.read_shard(out, k)[0]) == table.num_rows:
                resumed += 1
                continue
            if len(actors) < n:
                actors.append(actor.remote(factory))
            while len(pending) >= 2 * len(actors):
                _collect(ray, pending)
            a = actors[k % len(actors)]
            pending[a.embed.remote(str(out), k, table.column("id").to_pylist(), row_texts(table, cfg.fields))] = k
        while pending:
            _collect(ray, pending)
    finally:
        for a in actors:
            ray.kill(a, no_restart=True)
    if not indices:
        return np.zeros(0, "U24"), np.zeros((0, 0), np.float32), resumed
    parts = [embstore.read_shard(out, k) for k in indices]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), resumed


def _collect(ray, pending: dict[Any, int]) -> None:
    ready, _ = ray.wait(list(pending), num_returns=1)
    pending.pop(ready[0])
    try:
        ray.get(ready[0])
    except ray.exceptions.RayTaskError as e:
        raise task_error_cause(e) from e
