"""The diversity walk on the 2,996 Dolly rows of ../shared/data, with the bundled MiniLM: how much the walk prunes
at Deita's absolute 0.9 over instruction + input (the old default) and at the new default (the whole
conversation, the pool's q0.9 nearest-neighbour cosine). The numbers are in docs/DEPARTURES.md."""

from __future__ import annotations

import json

import pytest

from pipeline.records import new_row
from pipeline.stages.select.config import SelectConfig
from pipeline.stages.select.stage import run_select
from pipeline.store import DatasetWriter

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def dolly_pool(shared_data, out):
    rows = [new_row(r["instruction"], r.get("input") or "", r["output"], origin="import", score=1.0,
                    task_kind=r.get("category"))
            for r in json.loads((shared_data / "dolly_3k.json").read_text())]
    w = DatasetWriter(out, "score")
    for k in range(0, len(rows), 1000):
        w.write_shard(k // 1000, rows[k:k + 1000])
    w.write_manifest()
    return out, len(rows)


def test_dolly_walk_prunes_at_the_old_and_the_new_default(shared_data, tmp_path):
    pool, n = dolly_pool(shared_data, tmp_path / "dolly")
    old = run_select(pool, tmp_path / "old", SelectConfig(threshold=0.9, text="fields", budget="all"),
                     workdir=tmp_path / "w", progress=False)
    new = run_select(pool, tmp_path / "new", SelectConfig(), workdir=tmp_path / "w", progress=False)
    pruned_old, pruned_new = old["drops"].get("too_similar", 0), new["drops"].get("too_similar", 0)
    t = new["threshold"]
    print(f"\ndolly rows={n} old: pruned {pruned_old} at 0.9 over instruction+input; new: pruned {pruned_new} at "
          f"{t['value']:.4f} (q{t['quantile']} of {t['sample_rows']} rows; nn cosine {t['nn_cosine']}), "
          f"text {new['embedded_text']}")
    assert n == 2996 and new["budget"] == 10_000 and new["selected"] + pruned_new == n
    assert t["mode"] == "quantile" and t["sample_rows"] == n
    assert new["embedded_text"] == {"mode": "conversation", "max_chars": 1024}  # MiniLM reads 256 tokens
    # measured (MiniLM full, CPU): old 61 pruned (2.0%); new threshold 0.8012, 155 pruned (5.2%)
    assert 40 <= pruned_old <= 90
    assert 0.75 <= t["value"] <= 0.85
    assert 0.035 * n <= pruned_new <= 0.07 * n
    assert pruned_new >= 2 * pruned_old
