"""Evol-Instruct's answer budget: 2048 tokens by default, lowered to the teacher's window; a cut-off answer
is asked once more at a larger budget before any drop; the manifest counts cut-off answers per round and
in all."""

from __future__ import annotations

import json

from evol_support import evolve_reply, judge_reply, make_input, window_factory

from pipeline import records
from pipeline.context import RunContext
from pipeline.stages.evol_instruct import EvolConfig, run_evol_instruct
from pipeline.store import Dataset
from pipeline.teacher.fake import FakeTeacher
from pipeline.teacher.limits import estimate_tokens


def scripted(answer):
    """The usual evolve and judge replies; `answer(req)` for the answer step."""
    def reply(req):
        if req.purpose.startswith("evol:evolve"):
            return evolve_reply(req)
        if req.purpose.startswith("evol:judge"):
            return judge_reply(req)
        return answer(req)
    return reply


def long_answers(req):
    """A teacher whose answer needs more than 1000 tokens: cut off below that budget."""
    if req.sampling.max_tokens < 1000:
        return ("Step 1: gather the data. Step 2: compare the", "length")
    return "Step 1: gather the data. Step 2: compare the rows. Step 3: report the result."


def run(tmp_path, teacher, cfg, factory=None):
    src = make_input(tmp_path / "in", ["Explain how tides work."])
    ctx = RunContext(run_id="t", seed=1, progress=False, teacher_factory=factory or (lambda: teacher))
    try:
        return run_evol_instruct(src, tmp_path / "out", ctx, cfg)
    finally:
        ctx.close()


def answers_sent(teacher):
    return [r for r in teacher.seen if r.purpose == "evol:answer"]


def test_a_cut_off_answer_is_asked_once_more_at_twice_the_budget_and_kept(tmp_path):
    teacher = FakeTeacher(scripted(long_answers))
    m = run(tmp_path, teacher, EvolConfig(rounds=1, answer_max_tokens=600))
    assert [r.sampling.max_tokens for r in answers_sent(teacher)] == [600, 1200]
    (row,) = [r for r in Dataset(tmp_path / "out").iter_rows() if r["round"] == 1]
    assert row["output"].endswith("Step 3: report the result.") and row["finish_reason"] == "stop"
    assert json.loads(row["sampling"])["max_tokens"] == 1200  # the budget the kept answer was written under
    meta = records.get_meta(row, "evol_instruct")
    assert meta["answer_attempts"] == 2 and meta["first_answer_finish"] == "length"
    want = {"answers": 1, "truncated_first": 1, "retried": 1, "still_truncated": 0, "rate": 1.0,
            "rate_after_retry": 0.0}
    assert m["truncation"] == want and m["per_round"][0]["truncation"] == want
    assert m["drops"] == {} and m["per_round"][0]["calls_answer_retry"] == 1


def test_an_answer_still_cut_off_after_the_retry_is_dropped_with_the_budget_named(tmp_path):
    teacher = FakeTeacher(scripted(lambda req: ("An answer that never", "length")))
    m = run(tmp_path, teacher, EvolConfig(rounds=1, answer_max_tokens=300, retry_truncated_max_tokens=900))
    assert [r.sampling.max_tokens for r in answers_sent(teacher)] == [300, 900]
    (rej,) = Dataset(tmp_path / "out").rejected().read().to_pylist()
    assert rej["drop_reason"] == "answer_truncated"
    assert rej["drop_detail"] == "cut off at max_tokens=900 after one retry"
    assert m["truncation"]["still_truncated"] == 1 and m["truncation"]["rate_after_retry"] == 1.0


def test_the_retry_can_be_turned_off(tmp_path):
    teacher = FakeTeacher(scripted(long_answers))
    m = run(tmp_path, teacher, EvolConfig(rounds=1, answer_max_tokens=600, retry_truncated=False))
    assert [r.sampling.max_tokens for r in answers_sent(teacher)] == [600]
    assert m["drops"] == {"answer_truncated": 1}
    assert m["truncation"] == {"answers": 1, "truncated_first": 1, "retried": 0, "still_truncated": 1,
                               "rate": 1.0, "rate_after_retry": 1.0}


def test_the_default_2048_budget_is_lowered_to_the_window_and_not_refused_as_too_long(tmp_path):
    """A 1024-token teacher: the paper's 2048 would be refused unsent by the length guard; the answer is
    asked with what the window leaves after the prompt, and no retry can go further."""
    assert EvolConfig().answer_max_tokens == 2048 and EvolConfig().retry_truncated
    teacher = FakeTeacher(scripted(lambda req: ("A long answer that fills the window", "length")))
    m = run(tmp_path, teacher, EvolConfig(rounds=1), window_factory(teacher, 1024, tmp_path))
    (ans,) = answers_sent(teacher)
    assert ans.sampling.max_tokens == 1024 - estimate_tokens(ans.messages, 0)
    assert m["drops"] == {"answer_truncated": 1}  # cut off, never too_long
    assert m["truncation"]["retried"] == 0 and m["truncation"]["still_truncated"] == 1


def test_the_retry_budget_is_capped_by_the_window(tmp_path):
    teacher = FakeTeacher(scripted(lambda req: ("cut", "length") if req.sampling.max_tokens <= 300 else "done."))
    m = run(tmp_path, teacher, EvolConfig(rounds=1, evolve_max_tokens=100, answer_max_tokens=300),
            window_factory(teacher, 500, tmp_path))
    first, retry = answers_sent(teacher)
    assert first.sampling.max_tokens == 300
    assert retry.sampling.max_tokens == 500 - estimate_tokens(retry.messages, 0) < 600
    assert m["rows_out"] == 2 and m["truncation"]["retried"] == 1 and m["drops"] == {}
