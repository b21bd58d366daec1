"""The logprobs referee (`[hard] referee = "logprobs"`): a scripted judge (the teacher protocol) that returns
chosen top-k logprobs, so the expected value, the renormalisation over score tokens, a split "10", the
position swap and the gap are checked exactly; and which mode `auto` picks."""

from __future__ import annotations

import math
import re

import pytest

from pipeline.context import RunContext
from pipeline.errors import ConfigError
from pipeline.records import get_meta, new_row
from pipeline.stages.hard import HardConfig, HardStage
from pipeline.stages.hard.config import referee_mode
from pipeline.stages.hard.logprob_referee import Score, expected
from pipeline.teacher.base import Completion, TeacherError, TeacherUsage, Usage
from pipeline.teacher.fake import FakeTeacher

_BLOCK1 = re.compile(r"=== Answer of Assistant 1 ===\n(.*?)\n=== End", re.S)

# the judge's next-token distribution at "Score of Assistant N: ", by whose answer it scores and where it stands
DIST = {("teacher", 1): {"8": 0.6, "9": 0.2, "\n": 0.2},    # 8.25 (renormalised over 0.8)
        ("teacher", 2): {"7": 0.5, "8": 0.25, "1": 0.25},   # 6.3125: "1" (1 or 10) not the greedy token
        ("student", 1): {"2": 0.5, "5": 0.25, " ": 0.25},   # 3.0
        ("student", 2): {"1": 0.5, "4": 0.25, " ": 0.25}}   # "1" is 1 or 10: see AFTER_ONE
# after that "1": 0.2 "0" (10), 0.2 another digit (an invalid 11-19, dropped), 0.6 an end -> 1 is 0.75 of the
# "1" mass and 10 is 0.25: (10 * 0.125 + 1 * 0.375 + 4 * 0.25) / 0.75 = 3.5, and for the teacher's second
# place 10 * 0.0625 + 1 * 0.1875 + 7 * 0.5 + 8 * 0.25 = 6.3125
AFTER_ONE = {"0": 0.2, "2": 0.2, "\n": 0.6}


def _position(dist):
    chosen = max(dist, key=dist.get)
    return {"token": chosen, "logprob": math.log(dist[chosen]),
            "top_logprobs": [{"token": t, "logprob": math.log(p)} for t, p in dist.items()]}


def _logprobs(dist, max_tokens=1):
    """The greedy reply's positions: after a greedy "1" the next one is AFTER_ONE's."""
    first = _position(dist)
    return [first] if max_tokens < 2 else [first, _position(AFTER_ONE if first["token"] == "1" else {"\n": 1.0})]


class LogprobJudge:
    """The teacher protocol: a raw-prompt request gets one token and its top logprobs from DIST; a chat
    request (the generator) gets a new instruction."""

    backend = "fake"

    def __init__(self, model="scripted-judge", tie=(), logprobs=True, fail_after=False):
        self.model, self.tie, self.with_logprobs, self.fail_after = model, set(tie), logprobs, fail_after
        self.stats = TeacherUsage()
        self.seen = []
        self.made = 0

    def chat(self, requests, on_done=None):
        out = [self.answer(r) for r in requests]
        for i, c in enumerate(out):
            if on_done is not None:
                on_done(i, c)
        return out

    def answer(self, req):
        self.seen.append(req)
        if req.prompt is None:
            self.made += 1
            return Completion(text=f"Describe a new thing number {self.made} about rivers and their deltas.",
                              finish_reason="stop", usage=Usage(1, 1), model=self.model)
        if req.prompt.endswith(": 1") and self.fail_after:
            return Completion(text=None, model=self.model, error=TeacherError("bad_request", "400", retryable=False))
        if req.prompt.endswith(": 1"):
            return Completion(text="0", finish_reason="length", model=self.model, logprobs=[_position(AFTER_ONE)])
        n = int(req.prompt[-3])  # "... Assistant N: "
        block1 = _BLOCK1.search(req.prompt).group(1)
        shown = block1 if n == 1 else req.prompt.split("=== Answer of Assistant 2 ===\n", 1)[1]
        who = "teacher" if shown.startswith("T:") or req.record_id in self.tie else "student"
        dist = DIST[(who, n)]
        return Completion(text=max(dist, key=dist.get), finish_reason="length", model=self.model,
                          logprobs=_logprobs(dist, req.sampling.max_tokens) if self.with_logprobs else None)

    def close(self):
        pass


def _student():
    return FakeTeacher(lambda req: f"S:{req.messages[-1]['content']}", model="scripted-student")


def _ctx(teacher):
    return RunContext(run_id="t", seed=0, teacher_factory=lambda: teacher, progress=False)


def _rows():
    return [new_row(q, "", f"T:{q}", origin="import") for q in ("Explain photosynthesis.", "Name a prime number.")]


@pytest.mark.parametrize("first,after,value,mass", [
    ({"7": 0.5, "9": 0.25, "\n": 0.25}, None, 7.6667, 0.75),            # renormalised over the score tokens
    ({" 7": 0.2, "7": 0.2, "3": 0.4, "x": 0.2}, None, 5.0, 0.8),       # " 7" and "7" are both 7
    ({"0": 0.3, "11": 0.3, "07": 0.2, "6": 0.2}, None, 6.0, 0.2),       # not a 1-10 score: ignored
    ({"10": 0.3, "1": 0.3, "5": 0.4}, None, 5.3, 1.0),                  # a whole "10" token: no second ask
    ({"1": 0.4, "8": 0.4, "x": 0.2}, {"0": 0.5, "5": 0.25, "\n": 0.125}, 7.5, 0.8),  # a split 10
    ({"1": 0.4, "8": 0.4}, {"5": 1.0}, 8.0, 0.4),                      # after "1" only an invalid 15
])
def test_the_expected_score_over_the_valid_score_tokens(first, after, value, mass):
    s = expected(first, after)
    assert s.value == value and s.mass == mass and not s.why


def test_no_score_token_or_no_logprobs_is_no_score():
    assert expected({"Hello": 0.9, "The": 0.1}) == Score(None, 0.0, "no score token 1-10 among the first token's top 2")
    assert expected(None).value is None and "no logprobs" in expected(None).why


def test_the_stage_reads_both_orders_from_logprobs_and_the_gap_is_exact():
    judge = LogprobJudge(tie={_rows()[1]["id"]})
    res = HardStage(HardConfig(referee="logprobs", easy_ratio=0), student=_student(), judge=judge).process(
        _rows(), _ctx(judge))
    by_q = {r["instruction"]: get_meta(r, "hard") for r in res.kept if r["origin"] == "import"}
    m = by_q["Explain photosynthesis."]
    assert m["referee_mode"] == "logprobs"
    # teacher_first: teacher as Assistant 1 (8.25), student as 2 (3.5); student_first: student 3.0, teacher 6.3125
    assert m["scores_by_order"] == {"teacher_first": {"teacher": 8.25, "student": 3.5},
                                    "student_first": {"teacher": 6.3125, "student": 3.0}}
    assert m["teacher_score"] == 7.28125 and m["student_score"] == 3.25 and m["student_gap"] == 4.03125
    assert m["hard"] is True
    assert m["score_reads"]["teacher_first:assistant2"] == {"score": 3.5, "mass": 0.75}
    assert m["score_reads"]["student_first:assistant2"] == {"score": 6.3125, "mass": 1.0}
    tie = by_q["Name a prime number."]  # both answers scored alike: each order favours Assistant 1, the mean cancels it
    assert tie["scores_by_order"]["teacher_first"] == {"teacher": 8.25, "student": 6.3125}
    assert tie["scores_by_order"]["student_first"] == {"teacher": 6.3125, "student": 8.25}
    assert tie["student_gap"] == 0.0 and tie["hard"] is False
    assert res.stats["judged"] == 2 and res.stats["hard"] == 1 and res.stats["easy"] == 1
    assert res.stats["generated_hard"] == 1


def test_four_prompts_per_row_end_before_the_number_and_a_split_ten_is_asked_once_more():
    judge = LogprobJudge()
    HardStage(HardConfig(referee="logprobs", per_hard=0), student=_student(), judge=judge).process(
        _rows()[:1], _ctx(judge))
    firsts = [r for r in judge.seen if r.prompt is not None and not r.purpose.endswith("after1")]
    assert sorted(r.purpose for r in firsts) == [f"hard:referee:{o}:assistant{n}" for o in ("student_first", "teacher_first")
                                                 for n in (1, 2)]
    for r in firsts:
        n = r.purpose[-1]
        assert r.prompt.endswith(f"Score of Assistant {n}: ") and r.sampling.max_tokens == 2
        assert r.sampling.logprobs == 20 and r.sampling.temperature == 0.0
        teacher_pos = "1" if ":teacher_first:" in r.purpose else "2"
        shown = dict(re.findall(r"=== Answer of Assistant (\d) ===\n(.*?)\n=== End", r.prompt, re.S))
        assert shown[teacher_pos] == "T:Explain photosynthesis." and shown["1" if teacher_pos == "2" else "2"].startswith("S:")
    # both Assistant-2 reads have a "1" (and no "10") among their top tokens: the student's reply wrote that "1"
    # itself, so its second position tells 1 from 10; the teacher's did not, so it is asked once more
    [after] = [r for r in judge.seen if r.purpose.endswith("after1")]
    first = next(r for r in firsts if r.purpose == "hard:referee:student_first:assistant2")
    assert after.purpose == first.purpose + ":after1" and after.prompt == first.prompt + "1"
    assert after.sampling.max_tokens == 1 and after.sampling.logprobs == 20


def test_a_reply_without_logprobs_leaves_the_row_without_a_verdict_and_says_why():
    judge = LogprobJudge(logprobs=False)
    res = HardStage(HardConfig(referee="logprobs"), student=_student(), judge=judge).process(_rows()[:1], _ctx(judge))
    m = get_meta(res.kept[0], "hard")
    assert m["verdict"] == "unparseable" and "student_gap" not in m and "hard" not in m
    assert all("no logprobs" in why for why in m["score_reads"].values())
    assert res.stats["referee_unparseable"] == 1


def test_a_failed_follow_up_leaves_that_score_unread_rather_than_guessing_1_or_10():
    judge = LogprobJudge(fail_after=True)
    res = HardStage(HardConfig(referee="logprobs"), student=_student(), judge=judge).process(_rows()[:1], _ctx(judge))
    m = get_meta(res.kept[0], "hard")
    assert m["verdict"] == "unparseable" and "student_gap" not in m
    assert m["score_reads"]["student_first:assistant2"] == "the follow-up after a '1' (1 or 10?) failed: bad_request"
    assert m["score_reads"]["teacher_first:assistant2"] == {"score": 3.5, "mass": 0.75}  # read from its own reply


def test_auto_reads_logprobs_from_the_embedded_model_and_text_from_any_other_judge():
    class J:
        def __init__(self, backend, model):
            self.backend, self.model = backend, model
    assert referee_mode("auto", J("llamacpp", "whatever.gguf")) == "logprobs"
    assert referee_mode("auto", J("openai", "smollm2-135m-instruct")) == "logprobs"  # the embedded server
    assert referee_mode("auto", J("openai", "gpt-4o-mini")) == "text"
    assert referee_mode("auto", J("vllm", "Qwen/Qwen2.5-7B-Instruct")) == "text"
    assert referee_mode("text", J("llamacpp", "x")) == "text" and referee_mode("logprobs", J("openai", "m")) == "logprobs"
    # the default config with a judge that serves the embedded model: logprobs decide
    judge = LogprobJudge(model="smollm2-135m-instruct")
    res = HardStage(HardConfig(per_hard=0), student=_student(), judge=judge).process(_rows()[:1], _ctx(judge))
    assert get_meta(res.kept[0], "hard")["referee_mode"] == "logprobs" and res.stats["judged"] == 1


def test_a_logprobs_referee_on_a_batch_judge_is_a_one_line_config_error():
    judge = LogprobJudge()
    judge.backend = "openai_batch"
    with pytest.raises(ConfigError, match=r"referee = 'logprobs'.*openai_batch.*referee = \"text\""):
        HardStage(HardConfig(referee="logprobs"), student=_student(), judge=judge).process(_rows()[:1], _ctx(judge))


def test_inspect_shows_the_logprob_gaps_and_flags(tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app
    from pipeline.runner import run_shards
    from pipeline.store import Dataset, DatasetWriter

    w = DatasetWriter(tmp_path / "in", "import")
    w.write_shard(0, _rows())
    w.write_manifest()
    judge = LogprobJudge(tie={_rows()[1]["id"]})
    ctx = RunContext(run_id="t", seed=0, teacher_factory=lambda: judge, progress=False, workdir=tmp_path)
    run_shards(HardStage(HardConfig(referee="logprobs", easy_ratio=0), student=_student(), judge=judge),
               Dataset(tmp_path / "in", require_complete=True), tmp_path / "out", ctx)
    r = CliRunner().invoke(app, ["inspect", str(tmp_path / "out"), "--rows", "3"])
    assert r.exit_code == 0, r.output
    assert "hard examples: 1 hard, 1 easy, 0 unparseable reviews, 0 not judged; 1 new instructions" in r.output
    assert "  referee: logprobs (2 rows); 2 of 2 rows got a gap" in r.output
    assert "gap +4.03 (7.28 vs 3.25) hard=true" in r.output and "gap +0.00 (7.28 vs 7.28) hard=false" in r.output
    assert "<- parent " in r.output and "Explain photosynthesis." in r.output
