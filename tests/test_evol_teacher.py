"""Evol-Instruct for real: the embedded SmolLM2 teacher over HTTP, and real Dolly rows."""

from __future__ import annotations

import json

import pytest
from evol_support import make_input, responder
from typer.testing import CliRunner

from pipeline.context import RunContext
from pipeline.stages.evol_instruct import EvolConfig, evolution_chain, run_evol_instruct
from pipeline.store import Dataset
from pipeline.teacher.fake import FakeTeacher

REASONS = {"evolve_error", "evolution_truncated", "empty_evolution", "prompt_leakage", "too_long",
           "identical_to_parent", "judge_error", "judged_equal", "judge_unclear", "answer_error", "answer_empty",
           "answer_truncated", "answer_sorry", "answer_degenerate", "over_max_rows"}


def check_lineage(out):
    ds = Dataset(out, require_complete=True)
    kept = list(ds.iter_rows())
    rej = list(ds.rejected().iter_rows()) if ds.rejected() else []
    by_id = {r["id"]: r for r in kept}
    for r in kept + rej:
        if r["round"] == 0:
            continue
        parent = by_id[r["parent_id"]]
        assert r["round"] == parent["round"] + 1 and r["root_id"] == parent["root_id"]
        assert r["origin"].startswith("evol:")
    for r in rej:
        assert r["drop_stage"] == "evol_instruct" and r["drop_reason"] in REASONS and r["drop_detail"]
    return ds.manifest(), kept, rej


@pytest.mark.teacher
def test_two_rounds_against_the_embedded_teacher_over_http(tmp_path, teacher_server):
    from pipeline.cli import app

    src = make_input(tmp_path / "in", ["Give three tips for staying healthy.",
                                       "Explain why the sky looks blue.",
                                       "Write a short poem about a lighthouse."])
    conf = tmp_path / "distill.toml"
    conf.write_text(
        "[teacher]\nbackend = 'openai'\n"
        f"base_url = '{teacher_server}'\nmodel = 'smollm2-135m-instruct'\nconcurrency = 2\ncache = false\n"
        "[evol_instruct]\nevolve_max_tokens = 64\nanswer_max_tokens = 64\njudge_max_tokens = 8\n"
        "drop_truncated_answers = false\n")
    res = CliRunner().invoke(app, ["evol-instruct", str(src), "--config", str(conf), "--rounds", "2",
                                   "--workdir", str(tmp_path / "w"), "--run-id", "r", "--seed", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "w" / "r" / "evol_instruct"
    m, kept, rej = check_lineage(out)
    assert m["teacher"] == {"backend": "openai", "model": "smollm2-135m-instruct"}
    assert [p["rows_in"] for p in m["per_round"]] == [3, 3]            # the pool keeps its size
    for p in m["per_round"]:
        assert p["evolved"] + p["failed"] == 3 and p["complete"]
        assert p["teacher_calls"] >= 3 and p["tokens_completion"] > 0  # real calls, real usage
    assert m["rows_out"] == 3 + m["evolutions_accepted"]
    for r in kept:
        if r["round"]:
            assert r["teacher_backend"] == "openai" and r["output"].strip() and r["completion_tokens"] > 0
    for r in rej:                                                        # the raw reply is kept for audit
        meta = json.loads(r["meta"])["evol_instruct"]
        assert meta["operation"] in r["origin"]
    deepest = max(kept + rej, key=lambda r: r["round"])
    chain = evolution_chain(out, deepest["id"])
    assert chain[0]["round"] == 0 and chain[-1]["id"] == deepest["id"]


@pytest.mark.realdata
def test_imported_dolly_rows_evolve_with_lineage(tmp_path, shared_data):
    from pipeline.importer import import_file

    import_file(shared_data / "dolly_3k.json", tmp_path / "in", run_id="r", limit=12)
    src_rows = list(Dataset(tmp_path / "in").iter_rows())
    assert len(src_rows) == 12
    teacher = FakeTeacher(responder)
    ctx = RunContext(run_id="r", seed=2, teacher_factory=lambda: teacher, progress=False)
    m = run_evol_instruct(tmp_path / "in", tmp_path / "out", ctx, EvolConfig(rounds=2), shard_rows=4)
    meta, kept, rej = check_lineage(tmp_path / "out")
    assert m["evolutions_accepted"] == 24 and m["rows_out"] == 36
    with_context = [r for r in src_rows if r["input"]]
    assert with_context
    for parent in with_context:   # a Dolly context travels into the evolved prompt
        child = next(r for r in kept if r["parent_id"] == parent["id"])
        assert parent["input"].strip()[:40] in child["instruction"]
    # every request for an evolution of a Dolly row holds that row's text
    evolve = [q for q in teacher.seen if q.purpose.startswith("evol:evolve") and q.purpose.endswith("round=1")]
    assert sorted(q.record_id for q in evolve) == sorted(r["id"] for r in src_rows)
