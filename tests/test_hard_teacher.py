"""`distill hard` end to end on real rows: 20 Dolly rows, the embedded SmolLM2 teacher (real llama.cpp over
loopback) as teacher, student and referee, one round, then `distill inspect` on what it wrote."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipeline.records import get_meta, make_id, new_row
from pipeline.stages.hard.strata import stratum
from pipeline.store import Dataset, DatasetWriter

pytestmark = [pytest.mark.teacher, pytest.mark.realdata]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], capture_output=True, text=True)


def test_one_round_on_20_dolly_rows_with_the_embedded_teacher_as_student_and_judge(tmp_path, shared_data,
                                                                                   teacher_server):
    dolly = json.loads((shared_data / "dolly_3k.json").read_text())
    picked = [r for r in dolly if len(r["input"]) < 300 and len(r["output"]) < 400][:20]
    w = DatasetWriter(tmp_path / "in", "import")
    w.write_shard(0, [new_row(r["instruction"], r["input"], r["output"], origin="import", task_kind=r["category"])
                      for r in picked])
    w.write_manifest()
    section = f'backend = "openai"\nbase_url = "{teacher_server}"\nmodel = "smollm2-135m-instruct"\ncache = false\nping_timeout_s = 120\nconcurrency = 2\ntimeout_s = 600\n'
    # threshold 0: SmolLM2's two orders nearly cancel (its gaps lie within +-0.2), so Lion's 1 would flag no row
    # and the generation step would have nothing to follow; any gap >= 0 is hard here
    (tmp_path / "c.toml").write_text(
        f"[run]\nworkdir = \"{tmp_path / 'w'}\"\n[teacher]\n{section}"
        "[hard]\nanswer_max_tokens = 48\nthreshold = 0.0\n"
        f"[hard.student]\n{section}")
    r = _cli("hard", tmp_path / "in", "--out", tmp_path / "out", "--config", tmp_path / "c.toml", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("hard: 20 rows in") and "judged" in r.stdout
    m = Dataset(tmp_path / "out").manifest()
    assert m["student"]["model"] == "smollm2-135m-instruct" and m["judge_teacher"] == "run teacher"
    rows = Dataset(tmp_path / "out").read().to_pylist()
    inputs = [x for x in rows if x["origin"] == "import"]
    assert len(inputs) == 20
    t = m["totals"]
    assert t.get("judged", 0) + t.get("referee_unparseable", 0) + sum(
        v for k, v in t.items() if k.startswith("student_failed")) == 20
    # `auto` reads the embedded model's scores from logprobs: most rows get a numeric gap (text mode: none did)
    assert m["settings"]["referee"] == "auto" and t.get("judged", 0) >= 15, t
    for x in inputs:  # every row was answered by the student: its answer's hash is lineage, with or without a verdict
        h = get_meta(x, "hard")
        assert len(h["student_answer_sha256"]) == 16 and h["first_order"] in ("teacher_first", "student_first")
        assert h["referee_mode"] == "logprobs"
        if "student_gap" in h:
            assert h["student_gap"] == h["teacher_score"] - h["student_score"]
            assert all(1 <= v <= 10 for o in h["scores_by_order"].values() for v in o.values())
            assert h["hard"] is (h["student_gap"] >= 0.0) and stratum(x["meta"]) == ("hard" if h["hard"] else "easy")
    new = [x for x in rows if x["origin"].startswith("hard:")]
    assert len(new) + m["rows_rejected"] == t.get("generated_hard", 0) + t.get("generated_easy", 0) + sum(
        v for k, v in t.items() if k.startswith("generated_dropped"))
    assert t.get("hard", 0) >= 1 and new  # the generation step saw hard rows and wrote new instructions
    ids = {x["id"] for x in inputs}
    assert all(x["parent_id"] in ids and x["origin"] == f"hard:{x['parent_id']}" and x["output"] is None for x in new)

    shown = _cli("inspect", tmp_path / "out", "--rows", "3")
    assert shown.returncode == 0, shown.stderr
    assert f"hard examples: {t.get('hard', 0)} hard, {t.get('easy', 0)} easy" in shown.stdout
    assert f"referee: logprobs (20 rows); {t['judged']} of 20 rows got a gap" in shown.stdout
    assert "student_gap (teacher - student" in shown.stdout
    widest = max((get_meta(x, "hard") for x in inputs if "student_gap" in get_meta(x, "hard")),
                 key=lambda h: h["student_gap"])
    assert f"gap {widest['student_gap']:+.2f} " in shown.stdout and f"hard={str(widest['hard']).lower()}" in shown.stdout
    for x in new[:3]:
        assert f"<- parent {x['parent_id']}" in shown.stdout
    print(r.stdout, shown.stdout, sep="\n")


def test_the_embedded_teacher_writes_new_instructions_after_the_rows_a_scripted_referee_calls_hard(
        tmp_path, shared_data, openai_teacher_config):
    """SmolLM2-135M cannot write the referee's review (in text mode every review was unparseable) and its
    logprob scores are near chance, so here a scripted referee decides which rows are hard and the real model
    is the student and the generator: new rows beside their real parents."""
    from pipeline.context import RunContext
    from pipeline.runner import run_shards
    from pipeline.stages.hard import HardConfig, HardStage
    from pipeline.teacher import TeacherFactory
    from pipeline.teacher.fake import FakeTeacher

    dolly = json.loads((shared_data / "dolly_3k.json").read_text())
    picked = [r for r in dolly if not r["input"] and len(r["instruction"]) < 120][:6]
    w = DatasetWriter(tmp_path / "in", "import")
    w.write_shard(0, [new_row(r["instruction"], "", r["output"], origin="import") for r in picked])
    w.write_manifest()
    hard_ids = {make_id(r["instruction"], "") for r in picked[:3]}

    def referee(req):  # the first three rows: the teacher wins by 5; the others: a tie
        hard = req.record_id in hard_ids
        first_is_teacher = req.purpose.endswith("teacher_first")
        t, s = (9, 4) if hard else (6, 6)
        return f"Assistant 1: {t if first_is_teacher else s}\nAssistant 2: {s if first_is_teacher else t}"

    real = TeacherFactory(openai_teacher_config, tmp_path, 0)
    ctx = RunContext(run_id="h", workdir=tmp_path, teacher_factory=real.build, progress=False)
    student = real.build()
    try:
        stage = HardStage(HardConfig(answer_max_tokens=48), student=student, judge=FakeTeacher(referee))
        m = run_shards(stage, Dataset(tmp_path / "in", require_complete=True), tmp_path / "out", ctx)
    finally:
        student.close()
        ctx.close()
    t = m["totals"]
    assert t["judged"] == 6 and t["hard"] == 3 and t["easy"] == 3
    made = t.get("generated_hard", 0) + t.get("generated_easy", 0)
    assert made + m["rows_rejected"] == 6  # one request per hard row, as many after easy rows: kept or dropped
    rows = Dataset(tmp_path / "out").read().to_pylist()
    new = [x for x in rows if x["origin"].startswith("hard:")]
    assert all(x["teacher_model"] == "smollm2-135m-instruct" and x["instruction"].strip() for x in new)
    assert all((x["parent_id"] in hard_ids) is (get_meta(x, "hard")["generated_as"] == "hard") for x in new)
    shown = _cli("inspect", tmp_path / "out", "--rows", "6")
    assert shown.returncode == 0, shown.stderr
    assert "hard examples: 3 hard, 3 easy, 0 unparseable reviews" in shown.stdout
    assert "gap +5.00 (9.0 vs 4.0) hard=true" in shown.stdout
    for x in new[:3]:
        assert f"<- parent {x['parent_id']}" in shown.stdout
    print(shown.stdout)
