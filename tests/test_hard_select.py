"""Selection and the card read `distill hard`'s flag: the `hard` stratum of [select] quota_by, the hard share."""

from __future__ import annotations

import numpy as np

from pipeline.records import build_messages, new_row, set_meta
from pipeline.stages.export.card import upstream_chain
from pipeline.stages.export.config import ExportConfig
from pipeline.stages.export.stage import run_export
from pipeline.stages.hard.strata import stratum
from pipeline.stages.select.config import SelectConfig
from pipeline.stages.select.stage import run_select
from pipeline.store import Dataset, DatasetWriter


class ArraySource:
    """Vectors by input position: orthogonal rows, so only scores, budget and quotas decide."""

    name = "array"

    def __init__(self, vecs):
        self.vecs = vecs

    def fetch(self, pos):
        return self.vecs[pos]


def _pool(tmp_path, n=60):
    rows = []
    for i in range(n):
        r = new_row(f"task {i}", "", f"answer {i}.", origin="orca", score=float(n - i))
        if i % 3 != 2:  # every third row was never judged (a new instruction, or an unparseable review)
            set_meta(r, "hard", {"student_gap": 2.0 if i % 3 == 0 else 0.0, "hard": i % 3 == 0})
        set_meta(r, "orca", {"mode": "system_messages"})
        rows.append(r)
    w = DatasetWriter(tmp_path / "in", "score")
    w.write_shard(0, rows)
    w.write_manifest()
    return tmp_path / "in", rows


def test_the_hard_stratum_reads_meta_hard():
    assert stratum(None) == "none" and stratum("{}") == "none" and stratum("not json") == "none"
    assert stratum('{"hard": {"hard": true, "student_gap": 1.5}}') == "hard"
    assert stratum('{"hard": {"hard": false}}') == "easy"
    assert stratum('{"hard": {"verdict": "unparseable"}}') == "none"


def test_select_quota_by_hard_caps_each_stratum(tmp_path):
    path, rows = _pool(tmp_path)
    src = ArraySource(np.eye(len(rows), dtype=np.float32))
    cfg = SelectConfig(budget=30, quota_by="hard", quotas={"hard": 20, "*": 5})
    m = run_select(path, tmp_path / "out", cfg, source=src, progress=False)
    assert m["selected_per_stratum"] == {"hard": 20, "easy": 5, "none": 5}
    kept = Dataset(tmp_path / "out").read().to_pylist()
    assert sum(stratum(r["meta"]) == "hard" for r in kept) == 20
    rej = Dataset(tmp_path / "out").rejected().read().to_pylist()
    assert any(r["drop_detail"] == "hard 'easy' quota full" for r in rej)


def test_the_card_chain_carries_the_hard_share(tmp_path):
    w = DatasetWriter(tmp_path / "h", "hard")
    w.write_shard(0, [new_row("a task here", "", "an answer", origin="import")], [],
                  {"judged": 8, "hard": 3, "generated_hard": 3, "generated_easy": 3, "easy": 5})
    w.write_manifest()
    [entry] = upstream_chain(tmp_path / "h")
    assert entry["hard_share"] == {"judged": 8, "hard": 3, "generated_hard": 3, "generated_easy": 3}
    rows = [new_row(f"Question {i}?", "", f"Answer {i}.", origin="orca", score=float(i)) for i in range(5)]
    for r in rows:
        r["messages"] = build_messages(r["instruction"], "", r["output"])
    sel = DatasetWriter(tmp_path / "sel", "select")
    sel.write_shard(0, rows)
    sel.write_manifest(input=str(tmp_path / "h"))
    run_export(tmp_path / "sel", tmp_path / "rel", ExportConfig(), progress=False)
    card = (tmp_path / "rel" / "README.md").read_text()
    assert "## Hard examples" in card and "Hard share: 3 of 8 judged rows (38%)" in card
    assert "3 new instructions after hard rows and 3 after easy ones" in card


def test_no_hard_stage_upstream_no_hard_section(tmp_path):
    rows = [new_row("Question?", "", "Answer.", origin="orca", score=1.0)]
    rows[0]["messages"] = build_messages("Question?", "", "Answer.")
    sel = DatasetWriter(tmp_path / "sel", "select")
    sel.write_shard(0, rows)
    sel.write_manifest(input=None)
    run_export(tmp_path / "sel", tmp_path / "rel", ExportConfig(), progress=False)
    assert "Hard" not in (tmp_path / "rel" / "README.md").read_text()
