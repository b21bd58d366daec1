"""The score stage end to end: gates + heuristic score, manifest, resume, the CLI, and its place in the plan."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.context import RunContext
from pipeline.plan import default_plan
from pipeline.records import get_meta, new_row
from pipeline.stages.score.combine import heuristic_score
from pipeline.stages.score.config import ScoreConfig
from pipeline.stages.score.stage import run_score
from pipeline.store import Dataset, DatasetWriter


def _pool():
    return [
        new_row("Give three tips for staying healthy.", "",
                "1. Eat vegetables every day.\n2. Sleep seven to nine hours.\n3. Walk for thirty minutes.", origin="seed"),
        new_row("What is 2 + 2?", "", "4", origin="seed", task_kind="math"),
        new_row("Explain how vaccines train the immune system, step by step, for a curious teenager.", "",
                ("Vaccines show the immune system a harmless piece or copy of a germ. " * 12).strip(), origin="orca",
                flags=["from_upstream"]),
        new_row("What is your opinion on cats?", "", "As an AI language model, I have no opinions.", origin="orca"),
        new_row("Describe the attached image.", "", "It is a dog.", origin="orca"),
        new_row("Tell me a fact.", "", "", origin="orca"),
    ]


def _dataset(path, rows):
    w = DatasetWriter(path, "import")
    w.write_shard(0, rows)
    w.write_manifest()
    return path


def test_heuristic_run_scores_kept_rows_and_records_drops(tmp_path):
    src = _dataset(tmp_path / "in", _pool())
    m = run_score(src, tmp_path / "out", ScoreConfig(), RunContext(run_id="r1", progress=False), shard_rows=4)
    assert m["score_source"] == "heuristic" and m["settings"]["heuristic_version"] == "len-rel-v1"
    assert m["rows_in"] == 6 and m["rows_out"] == 3
    assert m["drops"] == {"ai_disclaimer": 1, "empty_output": 1, "unseen_attachment": 1}
    out = {r["instruction"]: r for r in Dataset(tmp_path / "out").read().to_pylist()}
    for r in out.values():
        meta = get_meta(r, "score")
        assert 0 < meta["relevance"] <= 1 and r["score"] == heuristic_score(r, meta["relevance"])[0]
        assert r["quality"] is None and r["complexity"] is None  # no judge, no judge columns
        assert meta["score_source"] == "heuristic"
    ranked = sorted(out.values(), key=lambda r: -r["score"])
    assert ranked[0]["instruction"].startswith("Explain how vaccines")  # long answer to a detailed prompt first
    assert ranked[-1]["instruction"] == "What is 2 + 2?"
    assert out[ranked[0]["instruction"]]["flags"] == ["from_upstream"]  # other stages' flags survive
    rej = Dataset(tmp_path / "out").rejected().read().to_pylist()
    assert {r["drop_stage"] for r in rej} == {"score"} and all(r["drop_detail"] for r in rej)


def test_heuristic_is_bounded_like_quality_times_complexity():
    low, _ = heuristic_score({"instruction": "Hi", "input": "", "output": "Hey"})
    high, parts = heuristic_score({"instruction": "word " * 100, "input": "", "output": "x" * 5000})
    assert low == 1.0 and high == 36.0 and parts == {"h_answer": 6.0, "h_prompt": 6.0}


def test_rerun_resumes_and_changed_settings_are_refused(tmp_path):
    src = _dataset(tmp_path / "in", _pool())
    ctx = RunContext(run_id="r1", progress=False)
    run_score(src, tmp_path / "out", ScoreConfig(), ctx, shard_rows=4)
    m2 = run_score(src, tmp_path / "out", ScoreConfig(), ctx, shard_rows=4)
    assert m2["shards_skipped_on_resume"] == 2 and m2["rows_out"] == 3
    from pipeline.store import DatasetError
    with pytest.raises(DatasetError, match="different settings"):
        run_score(src, tmp_path / "out", ScoreConfig(gates=["empty"]), ctx, shard_rows=4)


def test_cli_score_with_decontamination(tmp_path):
    src = _dataset(tmp_path / "in", _pool())
    bench = tmp_path / "bench.txt"
    bench.write_text("Vaccines show the immune system a harmless piece or copy of a germ and it learns\n")
    res = CliRunner().invoke(app, ["score", str(src), "--out", str(tmp_path / "out"), "--workdir", str(tmp_path / "w"),
                                   "--decontaminate", str(bench), "--decontam-n", "8", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "decontamination hits: bench.txt=1" in res.output
    m = Dataset(tmp_path / "out").manifest()
    assert m["drops"]["contaminated"] == 1 and m["decontamination"]["n"] == 8


def test_cli_score_config_errors_are_one_line(tmp_path):
    src = _dataset(tmp_path / "in", _pool())
    cfg = tmp_path / "c.toml"
    cfg.write_text('[score]\njudge = "oracle"\n')
    res = CliRunner().invoke(app, ["score", str(src), "-c", str(cfg), "--workdir", str(tmp_path / "w")])
    assert res.exit_code != 0
    assert "[score] judge" in str(res.exception) or "[score] judge" in res.output


def test_plan_has_score_select_export_after_semdedup_with_export_last():
    names = [s.name for s in default_plan()]
    assert names[-3:] == ["score", "select", "export"]
    if "semdedup" in names:
        assert names.index("semdedup") < names.index("score")
    sections = {s.name: s.name for s in default_plan()}
    assert sections["score"] == "score" and sections["export"] == "export"


def test_manifest_is_json_serialisable_and_complete(tmp_path):
    src = _dataset(tmp_path / "in", _pool())
    run_score(src, tmp_path / "out", ScoreConfig(), RunContext(run_id="r1", progress=False))
    m = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert m["stage"] == "score" and m["totals"]["scored"] == 3 and m["totals"].get("unscored", 0) == 0
