"""`distill hard` with a scripted referee and generator (FakeTeacher, the teacher protocol) and a real
loopback student (tests/faultserver.py): the gap, the flag, the position swap, generation and its drops,
rounds, and the unanswered shard on a student outage."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import TeacherSection
from pipeline.context import RunContext
from pipeline.errors import TeacherUnavailable
from pipeline.records import get_meta, new_row
from pipeline.runner import run_shards
from pipeline.stages.hard import HardConfig, HardStage, referee, run_hard
from pipeline.store import Dataset, DatasetWriter
from pipeline.teacher.factory import TeacherFactory
from pipeline.teacher.fake import FakeTeacher
from tests.faultserver import FaultServer

# instruction -> (the true score of the teacher's answer, of the student's): what an unbiased referee gives
TRUE = {"Explain photosynthesis.": (8, 5), "Name a prime number.": (7, 6), "Write a haiku about rain.": (8, 7),
        "Summarise the French Revolution.": (6, 6)}
BIAS = 2  # the scripted referee gives Assistant 1 this much more than it deserves
_BLOCK = re.compile(r"=== Answer of Assistant (\d) ===\n(.*?)\n=== End", re.S)
_REQ = re.compile(r"=== Request ===\n(.*?)\n\n=== Answer", re.S)


def _rows():
    return [new_row(q, "", f"T:{q}", origin="import") for q in TRUE]


def _referee_reply(content: str) -> str:
    """A biased referee that knows the true scores: Assistant 1 gets BIAS more than its answer deserves."""
    question = _REQ.search(content).group(1)
    t, s = TRUE.get(question, (7, 3))  # a generated instruction: the student is far behind
    answers = dict(_BLOCK.findall(content))
    first = t if answers["1"].startswith("T:") else s
    second = s if answers["1"].startswith("T:") else t
    return f"Both answers address the request.\nAssistant 1: {first + BIAS}\nAssistant 2: {second}"


NOVEL = ["How do volcanoes form beneath oceanic plates?", "Which metals conduct heat best, and why?",
         "Compose a limerick about a lazy cat.", "Why did the Roman Republic collapse?",
         "Outline the steps to brew green tea properly.", "What makes the northern lights glow green?",
         "Describe the life cycle of a monarch butterfly.", "Compare the economies of Norway and Chile.",
         "List five uses of baking soda around a kitchen.", "Translate 'good morning' into three languages.",
         "Explain recursion to a ten year old child.", "Plan a three day walking trip in Kyoto."]


def _teacher(generated: dict[str, str] | None = None):
    """Referee, generator and (later rounds) answerer in one scripted teacher."""
    novel = iter(NOVEL)

    def reply(req):
        content = req.messages[-1]["content"]
        if req.purpose.startswith("hard:referee"):
            return _referee_reply(content)
        if req.purpose.startswith("hard:generate"):
            parent = content.split("=== Example task ===\n", 1)[1].split("\n\n=== New task", 1)[0]
            kind = req.purpose.split(":")[2]
            key = f"{kind}:{parent}:{req.sample_index}"
            return generated[key] if generated and key in generated else next(novel)
        if req.purpose == "hard:teacher_answer":
            return f"T:{content}"
        raise AssertionError(req.purpose)
    return FakeTeacher(reply, model="scripted-teacher")


def _student():
    return FakeTeacher(lambda req: f"S:{req.messages[-1]['content']}", model="scripted-student")


def _ctx(teacher, tmp_path=None, seed=0):
    return RunContext(run_id="t", seed=seed, teacher_factory=lambda: teacher, progress=False,
                      workdir=tmp_path or RunContext.workdir)


def test_gap_is_the_mean_over_both_orders_and_the_bias_cancels():
    teacher = _teacher()
    res = HardStage(HardConfig(easy_ratio=0), student=_student()).process(_rows(), _ctx(teacher))
    judged = {r["instruction"]: get_meta(r, "hard") for r in res.kept if r["origin"] == "import"}
    for q, (t, s) in TRUE.items():
        m = judged[q]
        # each order alone is off by the bias; the mean is the true gap exactly
        assert m["scores_by_order"]["teacher_first"] == {"teacher": t + BIAS, "student": s}
        assert m["scores_by_order"]["student_first"] == {"teacher": t, "student": s + BIAS}
        assert m["teacher_score"] == t + BIAS / 2 and m["student_score"] == s + BIAS / 2
        assert m["student_gap"] == t - s
        assert m["hard"] is (m["student_gap"] >= 1.0)
        assert m["student_model"] == "scripted-student" and m["referee_model"] == "scripted-teacher"
        assert len(m["student_answer_sha256"]) == 16
    assert [judged[q]["hard"] for q in TRUE] == [True, True, True, False]  # gaps 3, 1 (the threshold), 1, 0
    assert res.stats["judged"] == 4 and res.stats["hard"] == 3 and res.stats["easy"] == 1


def test_both_orders_are_asked_and_the_answers_swap_places():
    teacher = _teacher()
    HardStage(HardConfig(per_hard=0), student=_student()).process(_rows()[:1], _ctx(teacher))
    reviews = [r for r in teacher.seen if r.purpose.startswith("hard:referee")]
    assert sorted(r.purpose for r in reviews) == ["hard:referee:student_first", "hard:referee:teacher_first"]
    for r in reviews:
        blocks = dict(_BLOCK.findall(r.messages[-1]["content"]))
        teacher_pos = "1" if r.purpose.endswith("teacher_first") else "2"
        assert blocks[teacher_pos] == "T:Explain photosynthesis."
        assert blocks["2" if teacher_pos == "1" else "1"] == "S:Explain photosynthesis."
        assert r.sampling.temperature == 0.2 and r.sampling.max_tokens == 512  # Lion's referee


def test_which_order_goes_first_is_drawn_per_row_and_recorded():
    rows = [new_row(f"Question number {i} about history?", "", f"T:{i}", origin="import") for i in range(40)]
    res = HardStage(HardConfig(per_hard=0), student=_student()).process(rows, _ctx(_teacher()))
    firsts = [get_meta(r, "hard")["first_order"] for r in res.kept]
    assert set(firsts) == set(referee.ORDERS) and 8 <= firsts.count("teacher_first") <= 32
    again = HardStage(HardConfig(per_hard=0), student=_student()).process(rows, _ctx(_teacher()))
    assert firsts == [get_meta(r, "hard")["first_order"] for r in again.kept]  # from the run seed: repeatable


@pytest.mark.parametrize("text,expected", [
    ("Fine.\nAssistant 1: 7\nAssistant 2: 4", (7.0, 4.0)),
    ("Score of the Assistant 1: 8.5\nScore of the Assistant 2: 9", (8.5, 9.0)),
    ("Assistant 1 gets 3 points. Finally:\nAssistant 1: 6\nAssistant 2: 2", (6.0, 2.0)),  # the last one counts
    ("Assistant 1: 7", None), ("Assistant 1: 0\nAssistant 2: 5", None), ("Assistant 1: 11\nAssistant 2: 5", None),
    ("", None), (None, None)])
def test_parse_scores(text, expected):
    assert referee.parse_scores(text) == expected


def test_an_unparseable_review_leaves_the_row_without_a_flag():
    teacher = FakeTeacher(lambda req: "They are both fine." if req.purpose.endswith("student_first")
                          else "Assistant 1: 9\nAssistant 2: 1")
    res = HardStage(HardConfig(), student=_student()).process(_rows()[:2], _ctx(teacher))
    assert len(res.kept) == 2 and not res.rejected  # nothing generated: no row was judged hard
    for r in res.kept:
        m = get_meta(r, "hard")
        assert m["verdict"] == "unparseable" and "hard" not in m and "student_gap" not in m
        assert m["review_ends"] == {"student_first": "They are both fine.", "teacher_first": "Assistant 1: 9\nAssistant 2: 1"}
    assert res.stats["referee_unparseable"] == 2 and "judged" not in res.stats


def test_new_instructions_after_hard_and_easy_rows_with_lineage():
    res = HardStage(HardConfig(), student=_student()).process(_rows(), _ctx(_teacher()))
    inputs = {r["id"]: r for r in res.kept if r["origin"] == "import"}
    new = [r for r in res.kept if r["origin"].startswith("hard:")]
    hard_ids = {i for i, r in inputs.items() if get_meta(r, "hard")["hard"]}
    made = [get_meta(r, "hard")["generated_as"] for r in new]
    assert made.count("hard") == 3 and made.count("easy") == 3  # Lion: as many easy as hard
    for r in new:
        parent = r["origin"].split(":", 1)[1]
        assert r["parent_id"] == parent and r["root_id"] == inputs[parent]["root_id"]
        assert r["output"] is None and r["messages"] is None  # orca answers it
        kind = get_meta(r, "hard")["generated_as"]
        assert (parent in hard_ids) is (kind == "hard")
        assert r["prompt_template"] == f"hard/create_{kind}.txt" and r["teacher_model"] == "scripted-teacher"
    assert res.stats["generated_hard"] == 3 and res.stats["generated_easy"] == 3


def test_generated_instructions_that_fail_lions_filters_are_dropped_with_a_reason():
    q = "Explain photosynthesis."
    generated = {f"hard:{q}:0": "Explain how osmosis moves water through the roots of a tall tree.",
                 f"hard:{q}:1": "Here is the new task: explain osmosis in plants.",
                 f"hard:{q}:2": "Too short here", f"hard:{q}:3": "- explain osmosis to a child",
                 f"hard:{q}:4": "Explain how osmosis moves water through the roots of a tall oak."}  # ~ its sibling
    row = new_row(q, "", f"T:{q}", origin="import")
    res = HardStage(HardConfig(per_hard=5, easy_ratio=0), student=_student()).process([row], _ctx(_teacher(generated)))
    reasons = sorted(r["drop_reason"] for r in res.rejected)
    assert reasons == ["mentions_prompt", "starts_with_punctuation", "too_short", "too_similar"]
    assert all(r["drop_stage"] == "hard" and r["origin"] == f"hard:{row['id']}" for r in res.rejected)
    [kept] = [r for r in res.kept if r["origin"] != "import"]
    assert kept["instruction"] == generated[f"hard:{q}:0"]
    assert "ROUGE-L" in next(r["drop_detail"] for r in res.rejected if r["drop_reason"] == "too_similar")


@pytest.mark.parametrize("text,finish,reason", [
    ("Here's a new example: Imagine you were to start running.", "stop", "mentions_prompt"),  # SmolLM2's lead-in
    ("Write a poem about the sea in four lines.", "length", "truncated"),
    ("¿Qué hora es en Madrid ahora mismo?", "stop", "non_ascii_start"),
    ("Write a poem about the sea in four lines.", "stop", None)])
def test_lions_filters_on_one_reply(text, finish, reason):
    from pipeline.stages.hard import generate
    drop = generate.check(generate.clean(text), finish)
    assert (drop.reason if drop else None) == reason


def test_two_rounds_answer_judge_and_extend_the_new_instructions():
    teacher = _teacher()
    res = HardStage(HardConfig(rounds=2, easy_ratio=0), student=_student()).process(_rows(), _ctx(teacher))
    first = [r for r in res.kept if r["origin"].startswith("hard:") and get_meta(r, "hard")["generated_in_round"] == 1]
    # round 1's new rows were answered by the teacher and judged in round 2 (gap 4: hard), then extended
    second = [r for r in res.kept if r["origin"].startswith("hard:") and r["output"] is None]
    assert len(first) == 3 and all(r["output"].startswith("T:") and get_meta(r, "hard")["hard"] for r in first)
    assert all(get_meta(r, "hard")["round"] == 2 and get_meta(r, "hard")["student_gap"] == 4 for r in first)
    assert len(second) == 3 and {r["parent_id"] for r in second} == {r["id"] for r in first}
    assert all(get_meta(r, "hard")["generated_as"] == "hard" for r in second)
    assert sum(1 for r in teacher.seen if r.purpose == "hard:teacher_answer") == 3


def _dataset(path, rows):
    w = DatasetWriter(path, "import")
    w.write_shard(0, rows)
    w.write_manifest()
    return path


def test_a_student_outage_leaves_the_shard_unanswered_and_a_rerun_finishes(tmp_path):
    src = _dataset(tmp_path / "in", _rows())
    down = {"on": True}
    with FaultServer(lambda content, attempt: "500" if down["on"] else "ok") as srv:
        cfg = HardConfig(student=TeacherSection(backend="openai", base_url=srv.base_url, model="fault-model",
                                                max_retries=0, cache=False), easy_ratio=0)
        stage = HardStage(cfg, student_factory=TeacherFactory(cfg.student, tmp_path, 0))
        with pytest.raises(TeacherUnavailable, match="hard: 4 rows in 1 shard"):
            run_shards(stage, Dataset(src, require_complete=True), tmp_path / "out", _ctx(_teacher(), tmp_path))
        assert not (tmp_path / "out" / "_manifest.json").exists()
        down["on"] = False
        stage = HardStage(cfg, student_factory=stage.student_factory)
        m = run_shards(stage, Dataset(src, require_complete=True), tmp_path / "out", _ctx(_teacher(), tmp_path))
    rows = Dataset(tmp_path / "out").read().to_pylist()
    assert m["rows_in"] == 4 and len(rows) == 4 + m["totals"]["generated_hard"]
    assert all(get_meta(r, "hard")["student_model"] == "fault-model" for r in rows if r["origin"] == "import")


def test_run_hard_builds_the_student_from_its_section_and_records_it(tmp_path):
    src = _dataset(tmp_path / "in", _rows())
    with FaultServer() as srv:
        cfg = HardConfig(student=TeacherSection(backend="openai", base_url=srv.base_url, model="fault-model",
                                                max_retries=0, cache=False))
        m = run_hard(src, tmp_path / "out", cfg, _ctx(_teacher(), tmp_path))
    assert m["student"] == {"backend": "openai", "model": "fault-model"} and m["judge_teacher"] == "run teacher"
    assert m["settings"]["threshold"] == 1.0 and set(m["settings"]["prompts"]) == {
        "hard/referee.txt", "hard/referee_score.txt", "hard/create_hard.txt", "hard/create_easy.txt"}
    assert m["settings"]["referee"] == "auto"
    assert srv.received and m["totals"]["judged"] == 4


def test_hard_help_and_a_bad_config_is_one_line_exit_2(tmp_path):
    r = CliRunner().invoke(app, ["hard", "--help"])
    assert r.exit_code == 0 and "--rounds" in r.output and "Lion" in r.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[hard]\nthreshold = 12\n")
    src = _dataset(tmp_path / "in", _rows())
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "hard", str(src), "--config", str(bad),
                        "--workdir", str(tmp_path / "w")], capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "[hard] threshold" in lines[0] and str(bad) in lines[0], r.stderr


def test_distill_run_skips_hard_unless_enabled_and_it_inherits_the_score_judge():
    from pipeline.config import load_config
    from pipeline.plan import default_plan
    from pipeline.stages.hard.cli import SPEC, inherited

    names = [s.name for s in default_plan()]
    assert names.index("evol_instruct") < names.index("hard") < names.index("orca")
    assert SPEC.optional and SPEC.needs_teacher
    cfg = load_config(None, {"score": {"judge_teacher": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1"}}})
    assert inherited(cfg) == {"judge_teacher": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1"}}
    cfg2 = load_config(None, {"score": {"judge_teacher": {"backend": "openai"}}, "hard": {"judge_teacher": {"backend": "vllm"}}})
    assert inherited(cfg2) == {}


def test_inspect_shows_the_gaps_the_flags_and_the_new_instructions_with_their_parents(tmp_path):
    src = _dataset(tmp_path / "in", _rows())
    stage = HardStage(HardConfig(easy_ratio=0), student=_student())
    run_shards(stage, Dataset(src, require_complete=True), tmp_path / "out", _ctx(_teacher(), tmp_path))
    r = CliRunner().invoke(app, ["inspect", str(tmp_path / "out"), "--rows", "3"])
    assert r.exit_code == 0, r.output
    out = r.output
    assert "hard examples: 3 hard, 1 easy, 0 unparseable reviews, 0 not judged; 3 new instructions" in out
    assert "student_gap (teacher - student, 1-10, both orders): min 0.0, mean 1.25, max 3.0" in out
    assert "  referee: text (4 rows); 4 of 4 rows got a gap" in out
    assert "gap +3.00 (9.0 vs 6.0) hard=true" in out and "Explain photosynthesis." in out
    parent = _rows()[0]
    assert "new (hard, round 1) " in out and f"<- parent {parent['id']}: Explain photosynthesis." in out


def test_distill_run_runs_hard_only_when_enabled(tmp_path):
    from pipeline.config import load_config
    from pipeline.context import resolve_run
    from pipeline.runplan import run_plan
    from pipeline.stages.hard.cli import SPEC

    src = _dataset(tmp_path / "in", _rows())
    with FaultServer() as srv:
        net = {"backend": "openai", "base_url": srv.base_url, "model": "fault-model", "max_retries": 0, "cache": False}
        for enabled in (False, True):
            cfg = load_config(None, {"run": {"workdir": str(tmp_path / "w"), "run_id": f"r{enabled}"}, "teacher": net,
                                     "hard": {"enabled": enabled, "student": net}})
            summary = run_plan(cfg, resolve_run(cfg, None, None), plan=[SPEC], input=src, progress=False,
                               echo=lambda s: None)
            [step] = summary["steps"]
            assert step["status"] == ("done" if enabled else "skipped")
    rows = Dataset(tmp_path / "w" / "rTrue" / "hard").read().to_pylist()
    # the loopback teacher echoes: no review has two scores, so no row is flagged and nothing is generated
    assert len(rows) == 4 and all(get_meta(r, "hard")["verdict"] == "unparseable" for r in rows)
    assert all(get_meta(r, "hard")["student_model"] == "fault-model" for r in rows)


def test_orca_answers_the_new_instructions_and_keeps_the_verdicts(tmp_path):
    """The next stage reads what hard wrote: every row answered, the new ones included, meta.hard kept."""
    from pipeline.stages.orca import OrcaConfig, run_orca

    src = _dataset(tmp_path / "in", _rows())
    run_shards(HardStage(HardConfig(), student=_student()), Dataset(src, require_complete=True), tmp_path / "hard",
               _ctx(_teacher(), tmp_path))
    answers = FakeTeacher(lambda req: f"A careful answer to: {req.messages[-1]['content'][:40]}")
    m = run_orca(tmp_path / "hard", tmp_path / "orca", _ctx(answers, tmp_path), OrcaConfig())
    rows = Dataset(tmp_path / "orca").read().to_pylist()
    assert m["rows_in"] == 10 and len(rows) == 10 and m["rows_rejected"] == 0
    new = [r for r in rows if get_meta(r, "orca")["input_origin"].startswith("hard:")]
    assert len(new) == 6 and all(r["output"].startswith("A careful answer") and r["messages"] for r in new)
    assert all(get_meta(r, "hard")["generated_as"] in ("hard", "easy") for r in new)
    assert sum(1 for r in rows if (get_meta(r, "hard") or {}).get("hard")) == 3


def test_the_summary_says_why_nothing_was_generated_when_no_row_reached_the_threshold(tmp_path):
    from pipeline.stages.hard.cli import summary

    m = {"rows_in": 20, "rows_out": 20, "rows_rejected": 0, "settings": {"threshold": 1.0},
         "totals": {"judged": 20, "hard": 0, "easy": 20}}
    text = summary(m, tmp_path)
    assert "no row reached [hard] threshold = 1, so nothing was generated" in text and "--threshold" in text
    m["totals"].update(hard=3, easy=17)
    assert "no row reached" not in summary(m, tmp_path)
