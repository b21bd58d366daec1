"""`[run] min_novelty`: a run stops after its dedup step when the newest shard adds too few novel rows."""

from __future__ import annotations

import json

from minhash_support import write_dataset
from test_marginal import SHARD, pool_rows

from pipeline.config import load_config
from pipeline.context import RunPaths
from pipeline.report import write_report
from pipeline.runplan import run_plan
from pipeline.stage import StageSpec
from pipeline.stages.minhash.cli import SPEC as MINHASH


def _plan(calls):
    def generate(input, out, cfg, ctx):
        return write_dataset(out, pool_rows(), shard_rows=SHARD) and json.loads((out / "_manifest.json").read_text())

    def after(input, out, cfg, ctx):
        calls.append(input)
        return write_dataset(out, [], shard_rows=SHARD) and json.loads((out / "_manifest.json").read_text())

    # the real minhash step between a generator of the known pool (novel per 1k: 1000, 800, 500, 200) and a later step
    return [StageSpec("orca", None, generate, str, "write the pool", needs_input=False), MINHASH,
            StageSpec("score", None, after, str, "a later step")]


def _run(tmp_path, min_novelty, run_id):
    cfg = load_config(None)
    cfg.run.min_novelty = min_novelty
    calls, lines = [], []
    summary = run_plan(cfg, RunPaths(tmp_path / "work", run_id), plan=_plan(calls), echo=lines.append, progress=False)
    return summary, calls, lines


def test_the_run_stops_after_dedup_when_the_newest_shard_is_under_min_novelty(tmp_path):
    summary, calls, lines = _run(tmp_path, 300, "r1")
    assert calls == []  # the step after minhash did not run
    assert [s["status"] for s in summary["steps"]] == ["done", "done", "stopped"]
    st = summary["stopped"]
    assert (st["reason"], st["after"], st["novel_per_1k"], st["min_novelty"], st["rows_generated"]) == \
        ("min_novelty", "minhash", 200.0, 300, 4 * SHARD)
    on_disk = json.loads((tmp_path / "work" / "r1" / "run_summary.json").read_text())
    assert on_disk["stopped"]["reason"] == "min_novelty"
    assert summary["final_dataset"].endswith("minhash")
    assert any(line.startswith("[run] stopping after minhash: the newest shard added 200 novel rows") for line in lines)
    page = write_report(tmp_path / "work" / "r1").read_text()
    assert "This run stopped after minhash</strong>: the newest shard added 200 novel rows per 1k generated" in page


def test_the_run_goes_on_when_the_newest_shard_is_above_min_novelty_or_it_is_unset(tmp_path):
    for i, min_novelty in enumerate([150, None]):
        summary, calls, _ = _run(tmp_path, min_novelty, f"r{i}")
        assert len(calls) == 1 and "stopped" not in summary
        assert [s["status"] for s in summary["steps"]] == ["done", "done", "done"]
