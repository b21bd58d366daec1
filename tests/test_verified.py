"""Verified traces: the final-answer extraction rules, the vote, the stage with a scripted teacher (exact
outcomes), over real math-style rows (shared data), through the CLI, and on the embedded teacher."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pipeline.config import TeacherSection
from pipeline.context import RunContext
from pipeline.errors import ConfigError, TeacherUnavailable, exit_code_for
from pipeline.records import get_meta, new_row
from pipeline.stages.orca.verify import VerifyConfig, run_verify
from pipeline.stages.orca.verify.extract import (
    agrees,
    answer_kind,
    final_span,
    normalize,
    normalize_choice,
    normalize_number,
    normalize_text,
    options,
)
from pipeline.stages.orca.verify.stage import sample_id
from pipeline.stages.orca.verify.vote import vote
from pipeline.store import Dataset, DatasetWriter
from pipeline.teacher import TeacherFactory
from pipeline.teacher.base import TeacherError, derive_seed
from pipeline.teacher.fake import FakeTeacher

# -- extraction rules ------------------------------------------------------------------


@pytest.mark.parametrize("text,span", [
    ("Step 1.\nStep 2.\nAnswer: 12", "12"),
    ("so the Final Answer is 7 apples.\nThanks!", "7 apples."),
    ("We get \\boxed{42}. Answer: 41", "42"),             # \boxed wins over an answer line
    ("Natalia sold 48 + 24 = 72 clips.\n#### 72", "72"),  # GSM8K
    ("The total is\n15", "15"),                            # no mark: the last line
    ("Answer: 3\nLater: Answer: 5", "5"),                  # the last mark
    ("", ""),
])
def test_the_final_span(text, span):
    assert final_span(text) == span


@pytest.mark.parametrize("span,number", [
    ("12", "12"), ("12.0", "12"), ("2.50", "2.5"), ("1,234", "1234"), ("$1,234.50 total", "1234.5"),
    ("3/4", "0.75"), ("-5", "-5"), ("−5", "-5"), ("4 x 3 = 12", "12"), ("x = 9.", "9"), ("7 apples.", "7"),
    ("88; 52 keys are white", "88"),                        # starts with a number: that one
    ("The square root of 25 is 5.", "5"),                   # else the last
    ("2/3", "0.666667"), ("no number here", None), ("50%", "50"),
])
def test_numbers_are_normalised(span, number):
    assert normalize_number(span) == number


def test_choices_and_short_text():
    q = "Which planet is largest?\n(A) Mars\n(B) Jupiter\nC) Venus"
    assert options(q) == {"A": "mars", "B": "jupiter", "C": "venus"}
    assert options("What is 2 + 2?") == {}
    assert [normalize_choice(s, options(q)) for s in ["(B) Jupiter", "B", "b) Jupiter", "C.", "option c",
                                                        "Jupiter", "the planet Neptune"]] == \
        ["B", "B", None, "C", "C", "B", None]
    assert normalize_text("The Eiffel  Tower!") == "eiffel tower"
    assert agrees("it is eiffel tower in paris", "eiffel tower", "text")
    assert not agrees("eiffel towers", "eiffel tower", "text")
    assert not agrees(" ".join(["word"] * 20) + " eiffel tower", "eiffel tower", "text")  # too long to credit
    assert not agrees("12", "12.5", "number") and agrees("12", "12", "number")


@pytest.mark.parametrize("reference,question,kind", [
    ("B", "", "choice"), ("(C)", "", "choice"), ("B) Jupiter", "", "choice"),
    ("A", "Pick one:\n(A) x\n(B) y", "choice"),
    ("391", "", "number"), ("x = 9.", "", "number"), ("5,280 feet", "", "number"),
    ("Lima", "", "text"), ("the Eiffel Tower", "", "text"),
    ("A long reference that explains at length why the sky looks blue to us", "", None),
    ("", "Pick one:\n(A) x\n(B) y", "choice"), ("", "What is 2 + 2?", None),
])
def test_the_kind_of_answer(reference, question, kind):
    assert answer_kind(reference, question) == kind


# -- the vote --------------------------------------------------------------------------

def test_vote_against_a_reference_and_by_majority():
    v = vote(["12", "12", "13", None], "12", "number")
    assert (v.target, v.source, v.agreeing, v.agreement) == ("12", "reference", (True, True, False, False), 0.5)
    assert v.counts == {"12": 2, "13": 1}
    v = vote(["7", "7", "7", "8"], None, "number")
    assert (v.target, v.source, v.agreeing, v.agreement) == ("7", "majority", (True, True, True, False), 0.75)
    assert vote(["7", "7", "8", "8"], None, "number").source == "none"       # a tie
    assert vote(["7", "7", "8", None], None, "number").target == "7"         # 2 of the 3 that answered
    assert vote(["7", "7", "8", "9"], None, "number").target is None         # 2 of 4 is not more than half
    assert vote(["7", "7", "8", "9"], None, "number", majority=0.4).target == "7"
    assert vote([None, None], None, "number").agreement == 0.0


# -- the stage, with a scripted teacher ------------------------------------------------------

ROWS = [("What is 17 * 23?", "", "391"),
        ("Which planet is largest?\n(A) Mars\n(B) Jupiter\n(C) Venus", "", "B"),
        ("What is 6 * 7?", "", ""),                                   # no reference: the majority decides
        ("What is 1 + 1?", "", ""),                                   # no majority: every sample dropped
        ("Explain in detail why the sky is blue.", "", "Because air molecules scatter short wavelengths "
         "of sunlight far more than long ones, so blue light reaches us from all over the sky.")]

SCRIPT = {  # question -> reply per sample index
    "What is 17 * 23?": ["17 * 23 = 391.\nAnswer: 391", "Answer: 391.0", "Answer: 381", "I think so."],
    "Which planet": ["Jupiter is biggest.\nAnswer: (B)", "Answer: A", "Answer: Jupiter", ("Answer: B", "length")],
    "What is 6 * 7?": ["Answer: 42", "6*7 = 42", "Answer: 41", TeacherError("bad_request", "400", 1, False)],
    "What is 1 + 1?": ["Answer: 2", "Answer: 3", "Answer: 4", "Answer: 5"],
    "Explain in detail": ["Answer: Rayleigh scattering", "Answer: Rayleigh scattering.", "Answer: light",
                          "So it is:\nAnswer: rayleigh Scattering"],  # asked only without references
}


def scripted(req):
    q = req.messages[-1]["content"]
    for key, replies in SCRIPT.items():
        if q.startswith(key):
            return replies[req.sample_index]
    raise AssertionError(f"unexpected request {q!r}")


def make_input(path, rows=ROWS):
    w = DatasetWriter(path, "import")
    w.write_shard(0, [new_row(i, x, o, origin="import") for i, x, o in rows])
    w.write_manifest()
    return path


def run_scripted(tmp_path, **cfg):
    teacher = FakeTeacher(scripted)
    ctx = RunContext(run_id="r1", seed=3, teacher_factory=lambda: teacher, progress=False)
    m = run_verify(make_input(tmp_path / "in"), tmp_path / "out", ctx, VerifyConfig(**cfg))
    out = Dataset(tmp_path / "out")
    return m, teacher, out.read().to_pylist(), out.rejected().read().to_pylist()


def test_the_stage_keeps_agreeing_traces_and_drops_the_rest_with_reasons(tmp_path):
    m, teacher, kept, rej = run_scripted(tmp_path)
    by_q = {}
    for r in kept + rej:
        by_q.setdefault(r["instruction"].split("\n")[0], []).append(r)
    got = {q: sorted((get_meta(r, "verify")["sample_index"], r.get("drop_reason")) for r in rs)
           for q, rs in by_q.items() if q != "Explain in detail why the sky is blue."}
    assert got == {
        "What is 17 * 23?": [(0, None), (1, None), (2, "wrong_answer"), (3, "no_final_answer")],
        "Which planet is largest?": [(0, None), (1, "wrong_answer"), (2, None), (3, "truncated")],
        "What is 6 * 7?": [(0, None), (1, None), (2, "disagrees_with_majority"), (3, "teacher_error")],
        "What is 1 + 1?": [(0, "no_majority"), (1, "no_majority"), (2, "no_majority"), (3, "no_majority")],
    }
    sky = by_q["Explain in detail why the sky is blue."]
    assert [r["drop_reason"] for r in sky] == ["not_checkable"] and get_meta(sky[0], "verify") is None
    # 4 rows asked, 4 samples each, with distinct sample indexes and so distinct seeds
    assert len(teacher.seen) == 16
    seeds = {derive_seed(3, r.record_id, r.purpose, r.sample_index) for r in teacher.seen}
    assert len(seeds) == 16 and {r.sample_index for r in teacher.seen} == {0, 1, 2, 3}
    meta = {r["instruction"].split("\n")[0]: get_meta(r, "verify") for r in kept}
    assert meta["What is 17 * 23?"]["agreement"] == 0.5 and meta["What is 17 * 23?"]["target"] == "391"
    assert meta["What is 17 * 23?"]["target_source"] == "reference" and meta["What is 17 * 23?"]["answers"] == {"391": 2, "381": 1}
    assert meta["Which planet is largest?"]["kind"] == "choice" and meta["Which planet is largest?"]["agreement"] == 0.5
    assert meta["What is 6 * 7?"]["target_source"] == "majority" and meta["What is 6 * 7?"]["agreement"] == 0.5
    assert get_meta(by_q["What is 1 + 1?"][0], "verify")["agreement"] == 0.0
    assert "wrong_answer" in {r["drop_reason"] for r in rej}
    w = next(r for r in rej if r["drop_reason"] == "wrong_answer" and r["instruction"].startswith("What is 17"))
    assert w["drop_detail"] == "answered '381', the reference is '391'"
    # kept rows: one id per sample, lineage to the input row, the answer in messages, no system prompt in it
    parent = next(r for r in kept if r["instruction"] == "What is 17 * 23?")
    assert parent["parent_id"] != parent["id"] and parent["id"] == sample_id(parent["parent_id"], 0)
    assert len({r["id"] for r in kept}) == len(kept) == 6
    assert parent["messages"][-1]["content"] == parent["output"] == "17 * 23 = 391.\nAnswer: 391"
    assert [x["role"] for x in parent["messages"]] == ["user", "assistant"] and parent["origin"] == "verify"
    t = m["totals"]
    assert (t["verify.rows"], t["verify.samples"], t["verify.agreeing"], t["verify.rows_kept"]) == (4, 16, 6, 3)
    assert (t["verify.target.reference"], t["verify.target.majority"], t["verify.target.none"]) == (2, 1, 1)
    assert m["drops"] == {"not_checkable": 1, "wrong_answer": 2, "no_final_answer": 1, "truncated": 1,
                          "disagrees_with_majority": 1, "teacher_error": 1, "no_majority": 4}


def test_keep_first_and_no_reference(tmp_path):
    m, _, kept, rej = run_scripted(tmp_path, keep="first", reference="none")
    kept_q = sorted((r["instruction"].split("\n")[0], get_meta(r, "verify")["sample_index"]) for r in kept)
    # without references every row votes (failed samples do not): 391 (2 of 3), B (2 of 3: "Jupiter" is option
    # B), 42 (2 of 3), none for 1 + 1, "rayleigh scattering" (3 of 4, short text)
    assert kept_q == [("Explain in detail why the sky is blue.", 0), ("What is 17 * 23?", 0), ("What is 6 * 7?", 0),
                      ("Which planet is largest?", 0)]
    assert m["drops"]["extra_trace"] == 5 and "not_checkable" not in m["drops"]
    assert {get_meta(r, "verify")["target_source"] for r in kept} == {"majority"}


def test_outside_failures_leave_the_row_unanswered(tmp_path):
    def down(req):
        return TeacherError("server_error", "HTTP 503", 3, True) if req.sample_index == 2 else "Answer: 391"
    ctx = RunContext(run_id="r1", teacher_factory=lambda: FakeTeacher(down), progress=False)
    with pytest.raises(TeacherUnavailable, match="verify: 1 rows in 1 shard"):
        run_verify(make_input(tmp_path / "in", ROWS[:1]), tmp_path / "out", ctx, VerifyConfig())
    assert not Dataset(tmp_path / "out").done  # nothing marked done: the next run asks again


# -- real math-style rows (shared data) ------------------------------------------------------

def _real_math_rows(shared_data):
    dolly = json.loads((shared_data / "dolly_3k.json").read_text())
    alpaca = json.loads((shared_data / "alpaca_helpfulness_2k.json").read_text())
    want = {"How many feet are in 1 mile?", "What is the square root of 25?", "How many States are there in the United States?"}
    rows = [(r["instruction"], r.get("input") or "", r["output"]) for r in dolly if r["instruction"] in want]
    rows += [(r["instruction"], r["input"], r["output"]) for r in alpaca
             if r["instruction"] in ("Resolve the following mathematical equation.", "Do the calculation and output the answer.")]
    return rows


def test_real_math_rows_keep_the_agreeing_traces(tmp_path, shared_data):
    rows = _real_math_rows(shared_data)
    assert len(rows) == 5, rows
    truth = {"How many feet are in 1 mile?": "5280", "What is the square root of 25?": "5",
             "How many States are there in the United States?": "50", "4 * 4 * 4 * 4 - 10": "246", "4 + 5 x 10": "54"}

    def solver(req):  # right on samples 0 and 1, off by one on sample 2
        q = req.messages[-1]["content"]
        value = next(v for k, v in truth.items() if k in q)
        return f"Working it out.\nAnswer: {int(value) + (req.sample_index == 2)}"

    ctx = RunContext(run_id="r", teacher_factory=lambda: FakeTeacher(solver), progress=False)
    m = run_verify(make_input(tmp_path / "in", rows), tmp_path / "out", ctx, VerifyConfig(samples=3))
    out = Dataset(tmp_path / "out")
    kept, rej = out.read().to_pylist(), out.rejected().read().to_pylist()
    # the references: "5,280 feet", "The square root of 25 is 5.", "50", "310" (the data's own slip: 4^4 - 10 is
    # 246), "54"; the trace that computes 246 disagrees with the reference and is dropped with it
    refs = {get_meta(r, "verify")["reference"]: get_meta(r, "verify")["target"] for r in kept + rej}
    assert refs["5,280 feet"] == "5280" and refs["The square root of 25 is 5."] == "5" and refs["310"] == "310"
    assert len(kept) == 8 and m["totals"]["verify.rows_kept"] == 4
    assert {r["drop_reason"] for r in rej} == {"wrong_answer"} and len(rej) == 7
    eq = [r for r in kept + rej if r["input"] == "4 * 4 * 4 * 4 - 10"]
    assert {get_meta(r, "verify")["agreement"] for r in eq} == {0.0}
    assert all(get_meta(r, "verify")["agreement"] == pytest.approx(2 / 3, abs=1e-4) for r in kept)


# -- the CLI -----------------------------------------------------------------------------------

def test_cli_verify(tmp_path, monkeypatch):
    import pipeline.stage as stage_mod

    def make_context(cfg, paths, progress=True):
        return RunContext(run_id=paths.run_id, seed=cfg.run.seed, workdir=paths.workdir,
                          teacher_factory=lambda: FakeTeacher(scripted), progress=False)
    monkeypatch.setattr(stage_mod, "make_context", make_context)
    from pipeline.cli import app

    make_input(tmp_path / "in")
    r = CliRunner().invoke(app, ["orca", "verify", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                                 "--workdir", str(tmp_path / "w"), "--samples", "4", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "verify: 5 rows in, 6 verified traces kept from 16 samples (agreement 38%)" in r.output
    assert "targets: reference=2, majority=1, none=1; not checkable: 1" in r.output
    r = CliRunner().invoke(app, ["orca", "verify", str(tmp_path / "in"), "--out", str(tmp_path / "o2"),
                                 "--workdir", str(tmp_path / "w"), "--keep", "most"])
    assert isinstance(r.exception, ConfigError) and exit_code_for(r.exception) == 2
    assert "[verify] keep: Input should be 'all' or 'first'" in str(r.exception)


# -- the embedded teacher ------------------------------------------------------------------------

@pytest.mark.teacher
def test_verify_on_the_embedded_teacher(tmp_path, openai_teacher_config):
    rows = [("What is 2 + 2?", "", "4"), ("What is 10 - 3?", "", "7"),
            ("Which is a fruit?\n(A) Carrot\n(B) Apple", "", "B")]
    sec: TeacherSection = openai_teacher_config
    ctx = RunContext(run_id="r", seed=1, workdir=tmp_path, teacher_factory=TeacherFactory(sec, tmp_path, 1),
                     progress=False)
    try:
        m = run_verify(make_input(tmp_path / "in", rows), tmp_path / "out", ctx,
                       VerifyConfig(samples=2, max_tokens=40, truncated="keep"))
    finally:
        ctx.close()
    out = Dataset(tmp_path / "out", require_complete=True)
    kept = out.read().to_pylist()
    rejected = out.rejected()
    rej = rejected.read().to_pylist() if rejected else []
    assert len(kept) + len(rej) == 6 and m["totals"]["verify.samples"] == 6
    reasons = {"wrong_answer", "no_final_answer", "teacher_error", "empty_output", "refusal"}
    assert {r["drop_reason"] for r in rej} <= reasons, [(r["drop_reason"], r["drop_detail"]) for r in rej]
    for r in kept:  # a kept trace states the reference's answer
        v = get_meta(r, "verify")
        assert v["answer"] == v["target"] and v["target_source"] == "reference" and r["output"]
        assert normalize(final_span(r["output"]), v["kind"], r["instruction"]) == v["target"]
    for r in kept + rej:
        v = get_meta(r, "verify")
        peers = [x for x in kept + rej if x["parent_id"] == r["parent_id"]]
        assert v["agreement"] == sum(x.get("drop_reason") is None for x in peers) / 2
    assert m["totals"]["verify.agreeing"] == len(kept)
