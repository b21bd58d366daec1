"""`[run] min_novelty` after a dedup step: a newest shard with too few novel rows is recorded, and the run goes on."""

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


def test_under_min_novelty_after_dedup_is_recorded_but_the_run_goes_on(tmp_path):
    summary, calls, lines = _run(tmp_path, 300, "r1")
    assert len(calls) == 1  # the step after minhash ran: the release is never cut off after generation
    assert [s["status"] for s in summary["steps"]] == ["done", "done", "done"]
    assert "stopped" not in summary
    w = summary["novelty_warning"]
    assert (w["reason"], w["after"], w["novel_per_1k"], w["min_novelty"], w["rows_generated"]) == \
        ("min_novelty_after_dedup", "minhash", 200.0, 300, 4 * SHARD)
    on_disk = json.loads((tmp_path / "work" / "r1" / "run_summary.json").read_text())
    assert on_disk["novelty_warning"]["reason"] == "min_novelty_after_dedup"
    assert summary["final_dataset"].endswith("score")
    assert any(line.startswith("[run] note after minhash: the newest shard added 200 novel rows") for line in lines)
    page = write_report(tmp_path / "work" / "r1").read_text()
    assert "Novelty under [run] min_novelty after minhash</strong>: the newest shard added 200 novel rows" in page


def test_the_run_goes_on_when_the_newest_shard_is_above_min_novelty_or_it_is_unset(tmp_path):
    for i, min_novelty in enumerate([150, None]):
        summary, calls, _ = _run(tmp_path, min_novelty, f"r{i}")
        assert len(calls) == 1 and "stopped" not in summary and "novelty_warning" not in summary
        assert [s["status"] for s in summary["steps"]] == ["done", "done", "done"]
