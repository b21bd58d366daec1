"""Orca against the embedded SmolLM2 teacher over real HTTP (openai backend).

Kept small on purpose (a handful of requests, max_tokens <= 48): the llama.cpp
server answers one request at a time on a shared 2-core machine.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.context import RunContext
from pipeline.records import get_meta, new_row
from pipeline.stages.orca import OrcaConfig, calibrate
from pipeline.stages.orca.catalog import load_strategy_catalog, load_system_catalog
from pipeline.store import Dataset, DatasetWriter
from pipeline.teacher import TeacherFactory

pytestmark = pytest.mark.teacher

REASONS = {"teacher_error", "empty_output", "truncated", "refusal"}


def make_input(path: Path, tasks) -> Path:
    w = DatasetWriter(path, "import")
    w.write_shard(0, [new_row(i, x, o, origin="import") for i, x, o in tasks])
    w.write_manifest()
    return path


def test_cli_orca_on_the_embedded_teacher(tmp_path, teacher_server):
    make_input(tmp_path / "in", [
        ("What is the capital of France?", "", "Paris"),
        ("Which is a fruit?\n(A) Carrot\n(B) Apple", "", "B"),
        ("Classify the sentiment as positive or negative.", "I loved this film.", "positive"),
    ])
    cfg = tmp_path / "distill.toml"
    cfg.write_text(f"""
[teacher]
backend = "openai"
base_url = "{teacher_server}"
model = "smollm2-135m-instruct"
concurrency = 2
timeout_s = 300
cache = false

[orca]
max_tokens = 40
truncated = "keep"
""")
    from pipeline.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["orca", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--config", str(cfg),
                            "--workdir", str(tmp_path / "w"), "--logprobs", "2", "--no-progress"])
    assert r.exit_code == 0, r.output
    out = Dataset(tmp_path / "out", require_complete=True)
    rejected = out.rejected()
    rej = rejected.read().to_pylist() if rejected else []
    kept = out.read().to_pylist()
    assert len(kept) + len(rej) == 3 and kept, r.output
    assert all(x["drop_reason"] in REASONS for x in rej)
    secrets = [t for t in load_system_catalog().messages.values() if t]
    by_kind = {x["task_kind"] for x in kept + rej}
    assert by_kind <= {"open_qa", "multiple_choice", "classification"}
    for row in kept:
        assert row["output"].strip()
        assert row["messages"][-1] == {"role": "assistant", "content": row["output"]}
        # Orca 1: the student sees the system message the answer was written under (none for the empty one)
        assert row["system"] in secrets or row["system"] == ""
        assert row["messages"][:-2] == ([{"role": "system", "content": row["system"]}] if row["system"] else [])
        assert row["teacher_backend"] == "openai" and row["teacher_model"]
        assert row["completion_tokens"] > 0 and row["prompt_tokens"] > 0
        assert row["finish_reason"] in ("stop", "length")
        lp = get_meta(row, "orca")["logprobs"]
        assert lp and all(len(alts) <= 2 and isinstance(tok, str) and logp <= 0 for tok, logp, alts in lp)
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["teacher"]["backend"] == "openai"
    assert manifest["totals"]["teacher_requests"] == 3 + manifest["truncation"]["retried"]  # a cut-off answer: once more

    shown = runner.invoke(app, ["inspect", str(tmp_path / "out"), "--rows", "1"])
    assert shown.exit_code == 0, shown.output
    assert "strategy" in shown.output and "messages" in shown.output and "task_kind" in shown.output


def test_strategies_with_teacher_kind_detection_and_calibration(tmp_path, openai_teacher_config):
    make_input(tmp_path / "in", [("What is 2 + 3?", "", "5"), ("What is 10 + 1?", "", "11")])

    def ctx() -> RunContext:
        return RunContext(run_id="t", teacher_factory=lambda: TeacherFactory(
            openai_teacher_config, tmp_path, 0).build(), progress=False)

    # calibration with the teacher as judge: 2 rows x 2 strategies, then 4 judgements at most
    c = ctx()
    try:
        res = calibrate(tmp_path / "in", tmp_path / "map.toml", c,
                        OrcaConfig(max_tokens=32, temperature=0.0), per_kind=2, judge="teacher",
                        strategies=["direct_answer", "step_by_step"])
    finally:
        c.close()
    assert res.counts["requests"] == 4 and res.counts["judge_requests"] == 4 - res.counts["answer_errors"]
    assert set(res.scores["math"]) == {"direct_answer", "step_by_step"}
    assert all(cell["n"] == 2 and 0.0 <= cell["score"] <= 1.0 for cell in res.scores["math"].values())
    written = tomllib.loads((tmp_path / "map.toml").read_text())
    assert written["calibration"]["teacher_backend"] == "openai"
    assert written["strategy_map"] == res.strategy_map

    # the stage in Orca 2 mode with that mapping, task kinds asked of the teacher
    from pipeline.stages.orca import run_orca

    c = ctx()
    try:
        m = run_orca(tmp_path / "in", tmp_path / "out", c,
                     OrcaConfig(strategies=True, strategy_map_file=str(tmp_path / "map.toml"), task_kind="teacher",
                                max_tokens=32, retry_truncated_max_tokens=48, temperature=0.0))
    finally:
        c.close()
    assert m["rows_out"] + m["rows_rejected"] == 2
    assert set(m["drops"]) <= REASONS
    rows = Dataset(tmp_path / "out").read().to_pylist()
    rej = Dataset(tmp_path / "out").rejected()
    rows += rej.read().to_pylist() if rej else []
    names = set(load_strategy_catalog().names)
    for row in rows:
        assert row["strategy"] in names and row["system"] == load_strategy_catalog().texts[row["strategy"]]
        assert get_meta(row, "orca")["task_kind_source"] in ("teacher", "rules_fallback")
        if row.get("messages"):
            assert all(row["system"] not in msg["content"] for msg in row["messages"])
