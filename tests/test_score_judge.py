"""Judge parsing (recorded real replies, garbage included), expected values over logprobs, and the judged stage.

Unparseable or failed judgments must come out as such (null value, flag,
reason), never as a default score.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pipeline.context import RunContext
from pipeline.records import get_meta, new_row
from pipeline.stages.score.combine import combined_score
from pipeline.stages.score.config import ScoreConfig
from pipeline.stages.score.judge import SCALES, build_request, expected_score, parse_judgment, parse_score_text
from pipeline.stages.score.stage import ScoreStage, run_score
from pipeline.store import Dataset, DatasetWriter
from pipeline.teacher.base import Completion, TeacherError
from pipeline.teacher.fake import FakeTeacher

RECORDED = json.loads((Path(__file__).parent / "data" / "judge_replies_smollm2.json").read_text())["replies"]


@pytest.mark.parametrize("text, lo, hi, value", [
    ("5", 1, 6, 5.0), ("5.", 1, 6, 5.0), ("Score: 4/6", 1, 6, 4.0), ("**3**", 1, 6, 3.0), ("4.5", 0, 5, 4.5),
    ("5 - very good: complete and clear", 1, 6, 5.0), ("[[2]]", 1, 6, 2.0), ("Rating: 6", 1, 6, 6.0),
    ("I would rate this 4 out of 6.", 1, 6, 4.0), ("4\nThe response is accurate but terse.", 0, 5, 4.0),
    ("0", 0, 5, 0.0),
])
def test_capable_judge_replies_parse(text, lo, hi, value):
    assert parse_score_text(text, lo, hi) == (value, "")


@pytest.mark.parametrize("text, why", [
    ("", "empty"), ("The answer is 42", "no score"), ("7", "outside"), ("0", "outside"), ("5/10", "another scale"),
    ("1 - useless\n2 - poor\n3 - fair", "several"), ("Score: 2, or maybe Score: 5", "several"), ("six", "no score"),
])
def test_garbage_is_unparseable_with_a_reason(text, why):
    value, reason = parse_score_text(text, 1, 6)
    assert value is None and why in reason


def test_recorded_smollm2_replies_are_parsed_or_marked_unparseable():
    methods = {}
    for rec in RECORDED:
        judge = rec["purpose"].split(":")[1]
        _, lo, hi = SCALES[judge]
        j = parse_judgment(Completion(text=rec["text"], finish_reason=rec["finish_reason"], logprobs=rec["logprobs"]), judge)
        methods[rec["text"]] = j.method
        if j.method == "unparseable":
            assert j.value is None and j.reason and j.raw == rec["text"][:200]
        else:
            assert j.method == "logprobs" and lo <= j.value <= hi
    # The 135M model mostly answers the task instead of rating it: those replies must not become scores.
    assert methods["1, 2, 5, 9"] == "unparseable"
    assert methods["The capital of France is Paris."] == "unparseable"
    assert methods["1. Autumn leaves\n2. Red and gold on quiet paths\n3. The year exhales cold"] == "unparseable"
    assert methods["1\n"] == "logprobs"
    assert sum(m == "unparseable" for m in methods.values()) >= 8


def test_expected_value_matches_a_hand_computation_on_a_recorded_reply():
    rec = next(r for r in RECORDED if r["text"] == "1\n")
    top = rec["logprobs"][0]["top_logprobs"]
    p = {int(t["token"]): math.exp(t["logprob"]) for t in top if t["token"].strip() in {"1", "2", "3", "4", "5", "6"}}
    want = sum(i * v for i, v in p.items()) / sum(p.values())
    got = parse_judgment(Completion(text=rec["text"], logprobs=rec["logprobs"]), "quality")
    assert got.method == "logprobs" and got.value == pytest.approx(want, abs=1e-3)
    assert 1.0 < got.value < 6.0  # mass on other digits pulls it off the sampled "1"


def test_expected_value_merges_spaced_tokens_and_ignores_other_tokens():
    lp = [{"token": "Score", "logprob": -0.1, "top_logprobs": []},
          {"token": " 5", "logprob": math.log(0.4),
           "top_logprobs": [{"token": " 5", "logprob": math.log(0.4)}, {"token": "5", "logprob": math.log(0.1)},
                            {"token": " 6", "logprob": math.log(0.25)}, {"token": "7", "logprob": math.log(0.2)},
                            {"token": " the", "logprob": math.log(0.05)}]}]
    assert expected_score(lp, "5", 1, 6) == pytest.approx((5 * 0.5 + 6 * 0.25) / 0.75)
    got = parse_judgment(Completion(text="Score: 5", logprobs=lp), "quality")
    assert got.method == "logprobs" and got.value == pytest.approx(5.3333, abs=1e-3)
    # No logprobs (e.g. the llamacpp backend): the parsed number.
    assert parse_judgment(Completion(text="Score: 5"), "quality").method == "parsed"


def test_teacher_errors_are_recorded_not_scored():
    j = parse_judgment(Completion(text=None, error=TeacherError("bad_request", "HTTP 400: too long")), "quality")
    assert j.value is None and j.method == "error" and "bad_request" in j.reason
    # an outside failure (timeout, 5xx, auth, ...) is no verdict at all: the row is asked again
    j = parse_judgment(Completion(text=None, error=TeacherError("timeout", "no answer after 6 retries")), "quality")
    assert j.value is None and j.method == "unanswered" and "timeout" in j.reason


def test_combined_score_is_none_when_a_part_is_missing():
    assert combined_score({"quality": 4.0, "complexity": 3.0}, "quality*complexity") == 12.0
    assert combined_score({"quality": None, "complexity": 3.0}, "quality*complexity") is None
    assert combined_score({"accuracy": 4.5}, "accuracy") == 4.5


def _rows():
    return [new_row("What is the boiling point of water at sea level?", "", "100 degrees Celsius.", origin="seed"),
            new_row("Write a limerick about a cat.", "", "A cat with a hat sat on a mat. It purred and then napped.", origin="seed"),
            new_row("Name a prime number.", "", "Seven.", origin="seed")]


def test_stage_batches_every_judge_request_in_one_chat_call_and_never_defaults():
    replies = {"What is the boiling": {"quality": "5", "complexity": "2"},
               "Write a limerick": {"quality": "I think it is fine", "complexity": "3"},
               "Name a prime": {"quality": TeacherError("bad_request", "HTTP 422"), "complexity": "1"}}

    def responder(req):
        text = req.messages[0]["content"]
        judge = req.purpose.split(":")[1]
        key = next(k for k in replies if k in text)
        return replies[key][judge]

    fake = FakeTeacher(responder)
    calls = []
    real_chat = fake.chat
    fake.chat = lambda reqs: calls.append(len(reqs)) or real_chat(reqs)
    stage = ScoreStage(ScoreConfig(judge="teacher"), judge_teacher=fake)
    res = stage.process(_rows(), RunContext(run_id="t"))
    assert calls == [6]  # 3 rows x 2 judges, one call
    by = {r["instruction"][:10]: r for r in res.kept}
    good = by["What is th"]
    assert good["quality"] == 5.0 and good["complexity"] == 2.0 and good["score"] == 10.0 and good["flags"] == []
    bad = by["Write a li"]
    assert bad["quality"] is None and bad["score"] is None and bad["complexity"] == 3.0
    assert bad["flags"] == ["judge_unparseable:quality", "unscored"]
    meta = get_meta(bad, "score")
    assert meta["judgments"]["quality"]["method"] == "unparseable" and meta["judgments"]["quality"]["raw"] == "I think it is fine"
    err = by["Name a pri"]
    assert err["score"] is None and "judge_error:quality" in err["flags"]
    assert res.stats["judge_unparseable[quality]"] == 1 and res.stats["judge_error[quality]"] == 1
    assert res.stats["unscored"] == 2 and res.stats["scored"] == 1 and res.unanswered == 0


def test_a_row_whose_judge_failed_outside_the_row_is_unanswered_not_kept():
    def responder(req):
        if "prime" in req.messages[0]["content"] and req.purpose == "judge:quality":
            return TeacherError("server_error", "HTTP 503 after retries")
        return "4"
    stage = ScoreStage(ScoreConfig(judge="teacher"), judge_teacher=FakeTeacher(responder))
    res = stage.process(_rows(), RunContext(run_id="t"))
    assert [r["instruction"][:10] for r in res.kept] == ["What is th", "Write a li"] and res.rejected == []
    assert res.unanswered == 1 and res.unanswered_reasons == {"server_error": 1}


def test_judge_requests_are_deterministic_rating_requests():
    cfg = ScoreConfig(judge="teacher", judges=["quality", "complexity", "accuracy"], combine="accuracy")
    r = _rows()[0]
    reqs = [build_request(r, j, cfg) for j in cfg.judges]
    assert [q.purpose for q in reqs] == ["judge:quality", "judge:complexity", "judge:accuracy"]
    assert all(q.sampling.temperature == 0 and q.sampling.logprobs == 20 and q.record_id == r["id"] for q in reqs)
    assert "100 degrees Celsius." in reqs[0].messages[0]["content"]
    assert "100 degrees Celsius." not in reqs[1].messages[0]["content"]  # complexity judges the request only
    assert "(none)" in reqs[2].messages[0]["content"]


@pytest.mark.teacher
def test_real_judge_run_against_the_embedded_teacher(tmp_path, openai_teacher_config):
    """A small judged run over real HTTP: each judgment is a score in range or recorded as unparseable."""
    from pipeline.teacher import TeacherFactory

    w = DatasetWriter(tmp_path / "in", "import")
    w.write_shard(0, _rows())
    w.write_manifest()
    cfg = ScoreConfig(judge="teacher", judge_max_tokens=8)
    ctx = RunContext(run_id="t", workdir=tmp_path,
                       teacher_factory=lambda: TeacherFactory(openai_teacher_config, tmp_path, 0).build(),
                       progress=False)
    try:
        m = run_score(tmp_path / "in", tmp_path / "out", cfg, ctx)
    finally:
        ctx.close()
    assert m["score_source"] == "rubric" and m["teacher"]["model"] == "smollm2-135m-instruct"
    rows = Dataset(tmp_path / "out").read().to_pylist()
    assert len(rows) == 3
    for r in rows:
        judgments = get_meta(r, "score")["judgments"]
        for name in ("quality", "complexity"):
            j = judgments[name]
            if j["method"] in ("logprobs", "parsed"):
                assert 1 <= j["value"] <= 6 and r[name] == j["value"]
            else:
                assert j["method"] in ("unparseable", "error") and r[name] is None
                assert f"judge_{j['method']}:{name}" in r["flags"]
        if r["quality"] is not None and r["complexity"] is not None:
            assert r["score"] == pytest.approx(r["quality"] * r["complexity"])
        else:
            assert r["score"] is None and "unscored" in r["flags"]
    t = m["totals"]
    assert t["scored"] + t["unscored"] == 3
