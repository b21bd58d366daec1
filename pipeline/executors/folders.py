"""One stage's output folder written by many workers: workers stage, the driver commits.

A worker writes its shard's kept and rejected rows under hidden temporary
names (`stage_shard`) and returns their names; the driver, the only writer of
final names, renames them into place and then writes the done marker
(`ShardFolder.commit_shard`). So a worker that dies, or a zombie attempt that
outlives a retry, can leave only hidden temporaries, never a half-written or
doubly-written shard; they are removed when no worker is running.

On local disk the driver side *is* `store.DatasetWriter` (same plan check,
markers and manifest). On other filesystems `ShardFolder` keeps the same
layout and the same manifest fields with `storage`'s object-store rules.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from .. import records
from ..store import DONE_DIR, MANIFEST, PLAN, REJECTED_DIR, DatasetError, DatasetWriter, merge_markers, shard_name
from . import storage
from .storage import Location


@dataclass
class StagedShard:
    index: int
    kept: Location
    rejected: Location | None
    rows_out: int
    rows_rejected: int
    drops: dict[str, int] = field(default_factory=dict)


def stage_shard(folder: Location, index: int, kept: pa.Table | list[dict[str, Any]],
                rejected: pa.Table | list[dict[str, Any]] | None, *, stage: str = "") -> StagedShard:
    """Worker side of `store.DatasetWriter.write_shard`: same checks, temporary names only."""
    kept_t = records.conform(kept if isinstance(kept, pa.Table) else records.to_table(kept))
    name = shard_name(index)
    kept_tmp = storage.stage_table(folder.join(name), kept_t)
    rej_tmp, n_rej, drops = None, 0, Counter()
    if rejected is not None and len(rejected):
        rej_t = rejected if isinstance(rejected, pa.Table) else records.to_table(rejected, records.REJECTED_SCHEMA)
        rej_t = records.conform(rej_t, records.REJECTED_SCHEMA)
        missing = rej_t.column("drop_reason").null_count
        if missing:
            storage.delete(kept_tmp)
            raise ValueError(f"{stage}: {missing} rejected rows without a drop_reason")
        rej_tmp = storage.stage_table(folder.join(REJECTED_DIR, name), rej_t)
        n_rej = rej_t.num_rows
        drops.update(rej_t.column("drop_reason").to_pylist())
    return StagedShard(index, kept_tmp, rej_tmp, kept_t.num_rows, n_rej, dict(drops))


class ShardFolder:
    """The driver's handle on an output folder: plan check, done markers, commits, manifest."""

    def __init__(self, out: "str | Path | Location", stage: str, *, plan: dict[str, Any]):
        self.loc = storage.resolve(out)
        self.stage = stage
        self._local: DatasetWriter | None = None
        if self.loc.local:
            self._local = DatasetWriter(self.loc.path if storage.is_uri(str(out)) else out, stage, plan=plan)
            return
        storage.mkdirs(self.loc)
        storage.clean_temporaries(self.loc)
        plan = dict(plan, stage=stage)
        plan_loc = self.loc.join(PLAN)
        if storage.exists(plan_loc):
            old = storage.read_json(plan_loc)
            diff = {k: (old.get(k), v) for k, v in plan.items() if old.get(k) != v}
            if diff:
                changes = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
                raise DatasetError(f"{self.loc}: was started with different settings ({changes}); "
                                   "resume with the same settings, or write to a new --out / --run-id")
        else:
            storage.write_json(plan_loc, plan)
        storage.delete(self.loc.join(MANIFEST))  # extended again: not finished until the new manifest

    def _marker(self, index: int) -> Location:
        return self.loc.join(DONE_DIR, f"part-{index:05d}.json")

    def is_done(self, index: int) -> bool:
        if self._local is not None:
            return self._local.is_done(index)
        return storage.exists(self._marker(index))

    def commit_shard(self, staged: StagedShard, stats: dict[str, Any]) -> dict[str, Any]:
        """Rename the staged files into place, then write the done marker (the commit point)."""
        name = shard_name(staged.index)
        storage.commit(staged.kept, self.loc.join(name))
        rej_final = self.loc.join(REJECTED_DIR, name)
        if staged.rejected is not None:
            storage.commit(staged.rejected, rej_final)
        else:
            storage.delete(rej_final)  # left from an earlier, redone attempt
        marker = dict(stats)
        marker.update(shard=staged.index, rows_out=staged.rows_out, rows_rejected=staged.rows_rejected,
                      drops=staged.drops)
        if self._local is not None:
            from ..store import atomic_write_json
            atomic_write_json(Path(self._marker(staged.index).path), marker)
        else:
            storage.write_json(self._marker(staged.index), marker)
        return marker

    def clean_temporaries(self) -> None:
        """Remove what killed or zombie attempts staged; call only when no worker runs."""
        storage.clean_temporaries(self.loc, ("", REJECTED_DIR, DONE_DIR))

    def done_markers(self) -> list[dict[str, Any]]:
        if self._local is not None:
            return self._local.done_markers()
        d = self.loc.join(DONE_DIR)
        names = sorted(i.base_name for i in storage.list_files(d)
                       if i.base_name.startswith("part-") and i.base_name.endswith(".json"))
        return [storage.read_json(d.join(n)) for n in names]

    def write_manifest(self, **fields: Any) -> dict[str, Any]:
        if self._local is not None:
            return self._local.write_manifest(**fields)
        manifest = merge_markers(self.stage, self.done_markers())
        manifest.update(fields)
        storage.write_json(self.loc.join(MANIFEST), manifest)
        return manifest


