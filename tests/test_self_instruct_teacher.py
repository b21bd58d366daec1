"""Self-Instruct against the embedded SmolLM2 teacher over real HTTP (openai backend).

A handful of short requests each: the 135M model is weak, so these tests check
that whatever it answers is parsed, filtered and accounted for, not that it
writes good tasks.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from typer.testing import CliRunner

from pipeline.context import RunContext
from pipeline.stages.self_instruct import SelfInstructConfig, run_self_instruct
from pipeline.store import Dataset
from pipeline.teacher import TeacherFactory

pytestmark = pytest.mark.teacher

SMALL = dict(request_batch_size=2, patience=2, max_requests=6,
             bootstrap={"temperature": 0.7, "top_p": 0.5, "presence_penalty": 2.0, "max_tokens": 96},
             instances={"max_tokens": 64, "max_tokens_classification": 64})


def context(section, tmp_path) -> RunContext:
    return RunContext(run_id="real", seed=0, workdir=tmp_path,
                        teacher_factory=lambda: TeacherFactory(section, tmp_path, 0).build(), progress=False)


def check_accounting(out, manifest):
    """Every reply is in raw/, every candidate is kept or rejected with a reason."""
    ds = Dataset(out, require_complete=True)
    raw = [json.loads(line) for p in sorted((out / "raw").glob("*.jsonl")) for line in p.read_text().splitlines()]
    t = manifest["totals"]
    assert len(raw) == t["bootstrap_requests"] and all(r["text"] is not None or r["error"] for r in raw)
    rej = ds.rejected()
    reasons = Counter(r["drop_reason"] for r in rej.iter_rows()) if rej else Counter()
    assert sum(reasons.values()) == manifest["rows_rejected"] and all(reasons)
    accepted = manifest["accepted_instructions"]
    if manifest["mode"] == "self_instruct":
        assert t.get("classify_requests", 0) == accepted and t.get("instances_requests", 0) == accepted
    kept = list(ds.iter_rows())
    assert len({r["instruction"] for r in kept}) + reasons["no_valid_instances"] + reasons["teacher_error"] >= accepted
    for r in kept:
        assert (r["teacher_backend"], r["teacher_model"]) == ("openai", "smollm2-135m-instruct")
        assert r["origin"] == "self_instruct" and r["output"] and r["messages"][-1]["content"] == r["output"]
    return kept, reasons


def test_real_run_and_cached_rerun(openai_teacher_config, tmp_path):
    section = openai_teacher_config.model_copy(update={"cache": True, "cache_path": str(tmp_path / "cache.sqlite")})
    cfg = SelfInstructConfig(num_instructions=3, **SMALL)
    m = run_self_instruct(tmp_path / "a", context(section, tmp_path), cfg)
    assert m["stop_reason"] in ("target_reached", "max_requests", "no_progress")
    assert m["totals"]["requests"] <= 6 + 2 * 3 and m["teacher"]["backend"] == "openai"
    kept, reasons = check_accounting(tmp_path / "a", m)
    assert m["rows_in"] > 0 and m["totals"]["teacher_completion_tokens"] > 0   # the model did answer
    # The same run again into a new folder: every request is answered by the cache, same output.
    ctx = context(section, tmp_path)
    m2 = run_self_instruct(tmp_path / "b", ctx, cfg)
    assert m2["totals"]["cache_hits"] == m2["totals"]["requests"] == m["totals"]["requests"]
    key = lambda r: (r["instruction"], r["input"], r["output"])  # noqa: E731
    assert [key(r) for r in Dataset(tmp_path / "b").iter_rows()] == [key(r) for r in kept]
    ctx.close()


def test_real_alpaca_request(openai_teacher_config, tmp_path):
    cfg = SelfInstructConfig(mode="alpaca", num_instructions=5, request_batch_size=1, max_requests=1,
                             alpaca={"max_tokens": 96})
    ctx = context(openai_teacher_config, tmp_path)
    m = run_self_instruct(tmp_path / "out", ctx, cfg)
    ctx.close()
    assert m["totals"]["bootstrap_requests"] == 1 and m["stop_reason"] in ("target_reached", "max_requests")
    assert m["rows_out"] == m["accepted_instructions"]      # one row per accepted task in alpaca mode
    check_accounting(tmp_path / "out", m)
    assert m["rows_out"] + m["rows_rejected"] >= 1


def test_cli_against_the_embedded_teacher(teacher_server, tmp_path):
    from pipeline.cli import app
    conf = tmp_path / "distill.toml"
    conf.write_text(f"""
[teacher]
backend = "openai"
base_url = "{teacher_server}"
model = "smollm2-135m-instruct"
cache = false

[self_instruct]
request_batch_size = 1

[self_instruct.bootstrap]
max_tokens = 96

[self_instruct.instances]
max_tokens = 64
max_tokens_classification = 64
""")
    res = CliRunner().invoke(app, ["self-instruct", "--config", str(conf), "--workdir", str(tmp_path / "w"),
                                   "--run-id", "r1", "--target", "1", "--max-requests", "2", "--no-progress"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "w" / "r1" / "self_instruct"
    m = Dataset(out, require_complete=True).manifest()
    assert "self-instruct:" in res.output and f"{m['accepted_instructions']}/1 instructions accepted" in res.output
    assert m["settings"]["bootstrap"]["max_tokens"] == 96 and m["target"] == 1
    check_accounting(out, m)
