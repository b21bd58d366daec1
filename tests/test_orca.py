"""Orca stage: catalogs, task kinds, seeded choices, prompt erasure, answer filters,
resume, calibration and the CLI, with a scripted teacher (FakeTeacher).

The same paths run against the embedded teacher over HTTP in test_orca_teacher.py.
"""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.config import ConfigError
from pipeline.context import RunContext
from pipeline.errors import TeacherUnavailable
from pipeline.records import get_meta, new_row
from pipeline.stages.orca import TASK_KINDS, OrcaConfig, OrcaStage, calibrate, detect_kind, run_orca
from pipeline.stages.orca.answers import check_answer, compact_logprobs, refusal_phrase
from pipeline.stages.orca.calibrate import exact_match, final_answer, parse_rating, token_f1
from pipeline.stages.orca.catalog import load_strategy_catalog, load_system_catalog, read_strategy_map
from pipeline.stages.orca.task_kind import canonical_kind, parse_teacher_kind
from pipeline.store import Dataset, DatasetWriter
from pipeline.teacher.base import Completion, TeacherError, Usage
from pipeline.teacher.fake import FakeTeacher

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "prompts" / "orca" / "system_messages.toml"

TASKS = [
    ("What is 17 * 23?", "", "391"),
    ("Which planet is largest?\n(A) Mars\n(B) Jupiter\n(C) Venus", "", "B"),
    ("Classify the sentiment of this review as positive or negative.", "The food was cold and late.", "negative"),
    ("Translate 'good morning' into French.", "", "bonjour"),
    ("Summarize the paragraph in one sentence.", "Bees pollinate crops. Without them yields fall.", "Bees matter for crops."),
    ("Write a short poem about the sea.", "", "Waves."),
    ("What is the capital of Peru?", "", "Lima"),
    ("Give me some ideas for a rainy day.", "", "Read a book."),
]


def make_input(path: Path, tasks=TASKS) -> Path:
    w = DatasetWriter(path, "import")
    w.write_shard(0, [new_row(i, x, o, origin="import") for i, x, o in tasks])
    w.write_manifest()
    return path


def echo_answer(req):
    """A well-behaved teacher: a short trace ending in an answer line."""
    return f"Let me think it through.\nAnswer: {req.messages[-1]['content'][:20]}"


def ctx_for(responder=echo_answer, seed=0, run_id="r1") -> RunContext:
    return RunContext(run_id=run_id, seed=seed, teacher_factory=lambda: FakeTeacher(responder),
                        progress=False)


# -- catalogs ------------------------------------------------------------------

def test_catalog_has_16_messages_with_empty_first_and_a_mapping_for_every_kind():
    cat = load_system_catalog()
    assert sorted(cat.messages) == list(range(1, 17))
    assert cat.messages[1] == ""
    assert all(cat.messages[i] for i in range(2, 17))
    assert len(set(cat.messages.values())) == 16  # 16 distinct intents, no copy-paste
    assert set(cat.allowed) == set(TASK_KINDS)
    assert cat.allowed["multiple_choice"] == (8, 10)
    # 8 and 10 are for multiple choice only (paper 3.1.1)
    assert all(8 not in ids and 10 not in ids for k, ids in cat.allowed.items() if k != "multiple_choice")
    assert cat.allowed["math"] == (6, 11, 16)          # CoT
    assert cat.allowed["open_generation"] == (3, 4, 7)  # Flan 2021, not multiple choice


def test_strategy_catalog_has_the_six_orca2_strategies():
    cat = load_strategy_catalog()
    assert set(cat.names) == {"direct_answer", "step_by_step", "recall_then_generate",
                              "recall_reason_generate", "extract_generate", "explain_then_answer"}
    assert set(cat.default) == set(TASK_KINDS)


def _broken_catalog(tmp_path: Path, old: str, new: str) -> str:
    text = CATALOG.read_text()
    assert old in text
    p = tmp_path / "msgs.toml"
    p.write_text(text.replace(old, new, 1))
    return str(p)


def test_bad_catalog_errors_name_the_key(tmp_path):
    missing_text = _broken_catalog(tmp_path, 'text = "You are an AI assistant and a task', 'txt = "You are an AI assistant and a task')
    with pytest.raises(ConfigError) as e:
        load_system_catalog(missing_text)
    msg = str(e.value)
    assert "message[2] (id 3).text: Field required" in msg
    assert "txt" in msg  # the unknown key is named too

    with pytest.raises(ConfigError, match=r"allowed.math: unknown message ids \[42\]"):
        load_system_catalog(_broken_catalog(tmp_path, "math = [6, 11, 16]", "math = [6, 42]"))
    with pytest.raises(ConfigError, match=r"duplicated \[2\], missing \[3\]"):
        load_system_catalog(_broken_catalog(tmp_path, "id = 3\n", "id = 2\n"))
    with pytest.raises(ConfigError, match="unknown task kinds .'poetry'."):
        load_system_catalog(_broken_catalog(tmp_path, "[allowed]\n", "[allowed]\npoetry = [3]\n"))
    bad = tmp_path / "syntax.toml"
    bad.write_text("[[message]\nid = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_system_catalog(str(bad))
    with pytest.raises(ConfigError, match="system_map: .*unknown task kinds"):
        load_system_catalog(overrides={"poems": [2]})


def test_system_map_override_is_used(tmp_path):
    make_input(tmp_path / "in", TASKS[:1])
    run_orca(tmp_path / "in", tmp_path / "out", ctx_for(), OrcaConfig(system_map={"math": [13]}))
    row = Dataset(tmp_path / "out").read().to_pylist()[0]
    assert row["strategy"] == "sysmsg:13"
    assert row["system"] == load_system_catalog().messages[13]


# -- task kinds ----------------------------------------------------------------

@pytest.mark.parametrize("instruction,input,kind", [
    ("Which of these is a mammal?\n(A) Shark\n(B) Dolphin\n(C) Trout", "", "multiple_choice"),
    ("Answer the question. Options: yes, no, maybe", "", "multiple_choice"),
    ("Classify each animal as wild or domestic: wolf, cat, cow", "", "classification"),
    ("Is this review positive or negative?", "Great phone, awful battery.", "classification"),
    ("A train travels 60 km in 1.5 hours. How many km does it travel per hour at 2 + 2 speed?", "", "math"),
    ("Solve for x: 3x + 5 = 20", "", "math"),
    ("Solve this riddle: what has keys but opens no locks?", "", "reasoning"),
    ("Write a Python function that reverses a string.", "", "coding"),
    ("Translate the following sentence into German.", "I like apples.", "translation"),
    ("Extract all the dates mentioned in the text.", "Born 1990, moved 2001.", "extraction"),
    ("Summarize this article in two sentences.", "Long article text here.", "summarization"),
    ("Rewrite this sentence to sound more formal.", "gonna be late lol", "rewriting"),
    ("Who founded the company?", "Acme was founded in 1900 by Jane Roe.", "closed_qa"),
    ("Who painted the Mona Lisa?", "", "open_qa"),
    ("Give me five ideas for a birthday party.", "", "brainstorming"),
    ("Write a short story about a lost robot.", "", "creative_writing"),
    ("A day at the beach", "", "open_generation"),
])
def test_rule_based_task_kinds(instruction, input, kind):
    assert detect_kind(instruction, input) == kind


def test_numbered_lists_and_year_ranges_are_not_multiple_choice_or_math():
    assert detect_kind("Answer the questions: 1. Who won? 2. When?", "The Bears won in 1985.") == "closed_qa"
    assert detect_kind("List the venues of the US Open from 1991 - 1995") != "math"
    assert detect_kind("Which of these is fastest?", "", is_classification=True) == "classification"


def test_declared_kinds_and_teacher_replies():
    assert canonical_kind("general_qa") == "open_qa"
    assert canonical_kind("Information Extraction") == "extraction"
    assert canonical_kind("poetry") is None
    assert parse_teacher_kind("Kind: closed qa.") == "closed_qa"
    assert parse_teacher_kind("This is a Multiple-Choice question") == "multiple_choice"
    assert parse_teacher_kind("I don't know") is None


def test_task_kind_by_teacher_with_rules_fallback(tmp_path):
    make_input(tmp_path / "in", TASKS[:2])

    def responder(req):
        if req.purpose == "orca:task_kind":
            return "translation" if "17" in req.messages[-1]["content"] else "no idea"
        return echo_answer(req)
    ctx = ctx_for(responder)
    run_orca(tmp_path / "in", tmp_path / "out", ctx, OrcaConfig(task_kind="teacher"))
    rows = {r["instruction"][:5]: r for r in Dataset(tmp_path / "out").iter_rows()}
    assert rows["What "]["task_kind"] == "translation"
    assert get_meta(rows["What "], "orca")["task_kind_source"] == "teacher"
    assert rows["Which"]["task_kind"] == "multiple_choice"
    assert get_meta(rows["Which"], "orca")["task_kind_source"] == "rules_fallback"
    purposes = [r.purpose for r in ctx.teacher.seen]
    assert purposes.count("orca:task_kind") == 2 and purposes.count("orca:answer") == 2


# -- seeded choices ------------------------------------------------------------

def _choices(tmp_path: Path, name: str, seed: int) -> dict[str, str]:
    run_orca(tmp_path / "in", tmp_path / name, ctx_for(seed=seed), OrcaConfig())
    return {r["id"]: r["strategy"] for r in Dataset(tmp_path / name).iter_rows()}


def test_choices_are_seeded_per_record(tmp_path):
    many = [(f"Who wrote book number {i}?", "", "x") for i in range(40)]
    make_input(tmp_path / "in", many)
    a, b, c = _choices(tmp_path, "a", 0), _choices(tmp_path, "b", 0), _choices(tmp_path, "c", 1)
    assert a == b                       # reruns reproduce
    assert a != c                       # another run seed draws differently
    assert set(a.values()) <= {f"sysmsg:{i}" for i in (1, 2, 3, 5, 7)}  # open_qa -> T0 set
    assert len(set(a.values())) >= 4    # uniform over the allowed set, not stuck on one


def test_choice_does_not_depend_on_shard_layout(tmp_path):
    make_input(tmp_path / "in")
    run_orca(tmp_path / "in", tmp_path / "one", ctx_for(), OrcaConfig(), shard_rows=100)
    run_orca(tmp_path / "in", tmp_path / "many", ctx_for(), OrcaConfig(), shard_rows=3)
    key = lambda d: {r["id"]: (r["strategy"], r["system"]) for r in Dataset(d).iter_rows()}  # noqa: E731
    assert key(tmp_path / "one") == key(tmp_path / "many")


# -- prompt erasure and output rows --------------------------------------------

def _secret_texts() -> list[str]:
    return [t for t in load_system_catalog().messages.values() if t] + list(load_strategy_catalog().texts.values())


def sent_system(ctx) -> dict[str, str | None]:
    """record id -> the system turn the teacher was sent with its answer request (None: no system turn)."""
    out: dict[str, str | None] = {}
    for req in ctx.teacher.seen:
        if req.purpose == "orca:answer":
            out[req.record_id] = next((m["content"] for m in req.messages if m["role"] == "system"), None)
    return out


def test_orca1_rows_keep_the_generation_time_system_message(tmp_path):
    # eight tasks of six kinds, and a seed whose draws include the empty message (id 1) and others
    make_input(tmp_path / "in")
    ctx = ctx_for(seed=6)
    m = run_orca(tmp_path / "in", tmp_path / "out", ctx, OrcaConfig())
    rows = Dataset(tmp_path / "out").read().to_pylist()
    assert len(rows) == len(TASKS)
    sent = sent_system(ctx)
    catalog = load_system_catalog()
    ids = {get_meta(r, "orca")["system_id"] for r in rows}
    assert 1 in ids and len(ids) >= 3, ids  # both cases below are exercised
    for r in rows:
        info = get_meta(r, "orca")
        if info["system_id"] == 1:  # "no system message" was drawn: the teacher saw none, nor does the student
            assert sent[r["id"]] is None
            assert [x["role"] for x in r["messages"]] == ["user", "assistant"]
        else:
            assert sent[r["id"]] == catalog.text(info["system_id"]) == r["system"]
            assert r["messages"][0] == {"role": "system", "content": sent[r["id"]]}
            assert [x["role"] for x in r["messages"]] == ["system", "user", "assistant"]
        assert r["messages"][-1] == {"role": "assistant", "content": r["output"]}
        assert info["system_erased"] is False
    assert m["system_message_erasure"] == {"erased": False, "option": "auto", "mode": "orca1"}


def test_orca2_mode_erases_and_never_keeps(tmp_path):
    make_input(tmp_path / "in")
    generic = (ROOT / "prompts" / "orca" / "generic_system.txt").read_text().strip()
    m = run_orca(tmp_path / "in", tmp_path / "out", ctx_for(), OrcaConfig(strategies=True))
    assert m["system_message_erasure"] == {"erased": True, "option": "auto", "mode": "orca2",
                                           "generic_system": generic}
    for r in Dataset(tmp_path / "out").iter_rows():
        assert r["messages"][0] == {"role": "system", "content": generic} != {"role": "system", "content": r["system"]}
        assert get_meta(r, "orca")["system_erased"] is True
    # erase_system = "never" keeps the strategy instruction the answer was written under, in Orca 2 mode too
    ctx = ctx_for()
    m = run_orca(tmp_path / "in", tmp_path / "never", ctx, OrcaConfig(strategies=True, erase_system="never"))
    assert m["system_message_erasure"] == {"erased": False, "option": "never", "mode": "orca2"}
    sent = sent_system(ctx)
    for r in Dataset(tmp_path / "never").iter_rows():
        assert r["messages"][0] == {"role": "system", "content": sent[r["id"]]}
        assert r["system"] == load_strategy_catalog().texts[r["strategy"]] == sent[r["id"]]


@pytest.mark.parametrize("strategies", [False, True])
def test_prompt_erasure(tmp_path, strategies):
    make_input(tmp_path / "in")
    ctx = ctx_for()
    # Orca 2 erases by default; Orca 1 only when asked to
    cfg = OrcaConfig(strategies=True) if strategies else OrcaConfig(erase_system="always")
    m = run_orca(tmp_path / "in", tmp_path / "out", ctx, cfg)
    assert m["system_message_erasure"]["erased"] is True
    rows = Dataset(tmp_path / "out").read().to_pylist()
    assert len(rows) == len(TASKS)
    generic = (ROOT / "prompts" / "orca" / "generic_system.txt").read_text().strip()
    secrets = _secret_texts()
    sent_systems = {m["content"] for req in ctx.teacher.seen for m in req.messages if m["role"] == "system"}
    assert sent_systems and sent_systems <= set(secrets)  # the teacher did get the detailed instructions
    for r in rows:
        assert r["messages"][0] == {"role": "system", "content": generic}
        assert [m["role"] for m in r["messages"]] == ["system", "user", "assistant"]
        for m in r["messages"]:
            assert not any(s in m["content"] for s in secrets)
        # the generation-time instruction is kept for audit, in its own columns
        if r["strategy"] == "sysmsg:1":
            assert r["system"] == ""
        else:
            assert r["system"] in secrets
        if strategies:
            assert r["strategy"] in load_strategy_catalog().names
            assert r["prompt_template"] == f"orca/strategies.toml#{r['strategy']}"


def test_empty_system_message_rows_and_omit_option(tmp_path):
    make_input(tmp_path / "in")
    cfg = OrcaConfig(system_map={k: [1] for k in TASK_KINDS}, erase_system="always", empty_system_turn="omit")
    ctx = ctx_for()
    run_orca(tmp_path / "in", tmp_path / "out", ctx, cfg)
    assert all(m["role"] != "system" for req in ctx.teacher.seen for m in req.messages)
    for r in Dataset(tmp_path / "out").iter_rows():
        assert r["system"] == "" and r["strategy"] == "sysmsg:1"
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"]
    # erasing, the default gives those rows the generic system turn like every other row
    run_orca(tmp_path / "in", tmp_path / "out2", ctx_for(),
             OrcaConfig(system_map={k: [1] for k in TASK_KINDS}, erase_system="always"))
    assert all(r["messages"][0]["role"] == "system" for r in Dataset(tmp_path / "out2").iter_rows())
    # not erasing (Orca 1 default), they have no system turn whatever empty_system_turn says
    run_orca(tmp_path / "in", tmp_path / "out3", ctx_for(), OrcaConfig(system_map={k: [1] for k in TASK_KINDS}))
    assert all(r["messages"][0]["role"] == "user" for r in Dataset(tmp_path / "out3").iter_rows())


def test_generic_system_must_not_be_a_generation_instruction():
    with pytest.raises(ConfigError, match="erase nothing"):
        OrcaStage(OrcaConfig(strategies=True, generic_system=load_strategy_catalog().texts["step_by_step"]))
    OrcaStage(OrcaConfig(generic_system=load_strategy_catalog().texts["step_by_step"]))  # Orca 1 does not use it


@pytest.mark.parametrize("cfg, says", [
    ({}, "Prompt erasure: **off** (Orca 1 mode, erase_system = \"auto\")"),
    ({"strategies": True}, "Prompt erasure: **on** (Orca 2 mode)"),
    ({"erase_system": "always"}, "Prompt erasure: **on** (erase_system = \"always\")"),
])
def test_dataset_card_states_the_erasure_mode(tmp_path, cfg, says):
    cfg = OrcaConfig(**cfg)
    from pipeline.stages.export.config import ExportConfig
    from pipeline.stages.export.stage import run_export

    make_input(tmp_path / "in")
    run_orca(tmp_path / "in", tmp_path / "orca", ctx_for(), cfg)
    run_export(tmp_path / "orca", tmp_path / "rel", ExportConfig(), progress=False)
    card = (tmp_path / "rel" / "README.md").read_text()
    assert "## System messages" in card and says in card
    assert ("generic system message" in card) == (says.startswith("Prompt erasure: **on**"))


def test_output_rows_keep_lineage_and_fill_provenance(tmp_path):
    w = DatasetWriter(tmp_path / "in", "evol_instruct")
    parent = new_row("Name a colour.", origin="seed", output="red")
    child = new_row("Name three warm colours and explain why they feel warm.", origin="evol:deepening",
                    parent=parent, output="old answer", quality=5.0, flags=["x"])
    w.write_shard(0, [child])
    w.write_manifest()
    run_orca(tmp_path / "in", tmp_path / "out", ctx_for(run_id="run-9"), OrcaConfig(max_tokens=77))
    r = Dataset(tmp_path / "out").read().to_pylist()[0]
    assert (r["id"], r["parent_id"], r["root_id"], r["round"]) == (child["id"], parent["id"], parent["id"], 1)
    assert r["origin"] == "orca" and get_meta(r, "orca")["input_origin"] == "evol:deepening"
    assert r["output"].startswith("Let me think") and r["output"] != "old answer"
    assert r["quality"] is None and r["flags"] is None  # scores of the old output do not carry over
    assert r["teacher_backend"] == "fake" and r["teacher_model"] == "fake-teacher"
    assert json.loads(r["sampling"])["max_tokens"] == 77
    assert r["prompt_template"].startswith("orca/system_messages.toml#")
    assert len(r["prompt_hash"]) == 16 and r["finish_reason"] == "stop"
    assert r["prompt_tokens"] > 0 and r["completion_tokens"] > 0 and r["run_id"] == "run-9"


# -- answer filters ------------------------------------------------------------

def test_failures_become_rejected_rows_with_reasons(tmp_path):
    tasks = [("Q1 what?", "", "a"), ("Q2 what?", "", "b"), ("Q3 what?", "", "c"), ("Q4 what?", "", "d"),
             ("Q5 what?", "", "e")]
    make_input(tmp_path / "in", tasks)

    def responder(req):
        u = req.messages[-1]["content"]
        return {"Q1 what?": TeacherError("bad_request", "HTTP 400: bad message", attempts=1, retryable=False),
                "Q2 what?": ("   ", "stop"),
                "Q3 what?": ("A long answer that goes on and", "length"),
                "Q4 what?": "I'm sorry, but I cannot help with that request.",
                "Q5 what?": "Fine answer."}[u]
    m = run_orca(tmp_path / "in", tmp_path / "out", ctx_for(responder), OrcaConfig())
    assert m["rows_out"] == 1 and m["rows_rejected"] == 4
    assert m["drops"] == {"teacher_error": 1, "empty_output": 1, "truncated": 1, "refusal": 1}
    rej = {r["instruction"]: r for r in Dataset(tmp_path / "out").rejected().iter_rows()}
    assert rej["Q1 what?"]["drop_detail"].startswith("bad_request: HTTP 400: bad message (after 1 attempt(s))")
    assert rej["Q3 what?"]["output"] == "A long answer that goes on and"  # kept for audit
    assert rej["Q3 what?"]["drop_stage"] == "orca" and rej["Q3 what?"]["messages"] is None
    assert all(r["system"] is not None and r["task_kind"] for r in rej.values())


@pytest.mark.parametrize("kind", ["timeout", "auth", "server_error", "connection", "invalid_response"])
def test_an_outside_failure_leaves_the_row_unanswered_and_its_shard_not_done(tmp_path, kind):
    """A teacher that failed for a reason outside the row is no drop: its shard is not marked done, the
    other shards commit, no manifest, exit 4 in one line; the rerun asks only for what is missing."""
    tasks = [(f"Q{i} what?", "", "x") for i in range(6)]
    make_input(tmp_path / "in", tasks)
    down = {"Q1 what?", "Q4 what?"}

    def flaky(req):
        u = req.messages[-1]["content"]
        return TeacherError(kind, "the teacher is down", attempts=3) if u in down else echo_answer(req)
    with pytest.raises(TeacherUnavailable, match=rf"orca: 2 rows in 2 shard\(s\) unanswered \({kind}: 2\)"):
        run_orca(tmp_path / "in", tmp_path / "out", ctx_for(flaky), OrcaConfig(), shard_rows=2)
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "_done").iterdir()) == ["part-00001.json"]  # Q2, Q3 only
    assert not (out / "_manifest.json").exists() and not list((out / "rejected").glob("*.parquet"))
    teacher = FakeTeacher(echo_answer)
    ctx = RunContext(run_id="r1", teacher_factory=lambda: teacher, progress=False)
    m = run_orca(tmp_path / "in", out, ctx, OrcaConfig(), shard_rows=2)
    assert m["rows_out"] == 6 and m["rows_rejected"] == 0 and m["shards_skipped_on_resume"] == 1
    assert sorted(r.messages[-1]["content"] for r in teacher.seen) == [f"Q{i} what?" for i in (0, 1, 4, 5)]


def test_a_cut_off_answer_is_retried_at_twice_max_tokens_by_default(tmp_path):
    make_input(tmp_path / "in", TASKS[:2])
    teacher = FakeTeacher(lambda req: ("cut", "length") if req.sampling.max_tokens < 100 else "complete answer")
    ctx = RunContext(run_id="r1", teacher_factory=lambda: teacher, progress=False)
    m = run_orca(tmp_path / "in", tmp_path / "out", ctx, OrcaConfig(max_tokens=60))
    assert sorted(r.sampling.max_tokens for r in teacher.seen) == [60, 60, 120, 120]
    assert m["rows_out"] == 2 and m["drops"] == {}
    assert m["truncation"] == {"answers": 2, "truncated_first": 2, "retried": 2, "still_truncated": 0,
                               "rate": 1.0, "rate_after_retry": 0.0}
    assert {json.loads(r["sampling"])["max_tokens"] for r in Dataset(tmp_path / "out").iter_rows()} == {120}
    assert OrcaConfig().max_tokens == 2048 and OrcaConfig().retry_truncated


def test_the_default_budget_is_lowered_to_the_window_and_the_retry_capped_by_it(tmp_path):
    """A 1024-token teacher: 2048 would be refused as too_long unsent; a 600 budget retries at what the
    window leaves (not 1200)."""
    from evol_support import window_factory

    from pipeline.teacher.limits import estimate_tokens
    make_input(tmp_path / "in", TASKS[:1])
    teacher = FakeTeacher(lambda req: ("cut", "length") if req.sampling.max_tokens <= 600 else "complete answer")
    ctx = RunContext(run_id="r1", teacher_factory=window_factory(teacher, 1024, tmp_path), progress=False)
    try:
        m = run_orca(tmp_path / "in", tmp_path / "default", ctx, OrcaConfig())
        (sent,) = teacher.seen
        room = 1024 - estimate_tokens(sent.messages, 0)
        assert sent.sampling.max_tokens == room and m["rows_out"] == 1 and m["drops"] == {}
        m = run_orca(tmp_path / "in", tmp_path / "small", ctx, OrcaConfig(max_tokens=600))
        assert [r.sampling.max_tokens for r in teacher.seen[1:]] == [600, room]
        assert m["rows_out"] == 1 and m["truncation"]["retried"] == 1
    finally:
        ctx.close()


def test_truncated_keep_policy_and_retry_with_larger_budget(tmp_path):
    make_input(tmp_path / "in", TASKS[:3])

    def responder(req):
        if req.sampling.max_tokens < 100:
            return ("cut", "length")
        return "complete answer" if "17" in req.messages[-1]["content"] else ("still cut", "length")
    ctx = ctx_for(responder)
    m = run_orca(tmp_path / "in", tmp_path / "out", ctx, OrcaConfig(max_tokens=50, retry_truncated_max_tokens=200))
    assert m["rows_out"] == 1 and m["drops"] == {"truncated": 2}
    assert m["totals"]["orca_truncation_retries"] == 3
    r = Dataset(tmp_path / "out").read().to_pylist()[0]
    assert r["output"] == "complete answer" and json.loads(r["sampling"])["max_tokens"] == 200
    meta = get_meta(r, "orca")
    assert meta["attempts"] == 2 and meta["first_finish_reason"] == "length"
    assert r["completion_tokens"] == 1 + 2  # both attempts are paid for

    with pytest.raises(ValueError, match="must be larger than max_tokens"):
        OrcaConfig(max_tokens=50, retry_truncated_max_tokens=50)
    m = run_orca(tmp_path / "in", tmp_path / "keep", ctx_for(responder),
                 OrcaConfig(max_tokens=50, truncated="keep", retry_truncated=False))
    assert m["rows_out"] == 3
    assert {r["finish_reason"] for r in Dataset(tmp_path / "keep").iter_rows()} == {"length"}


def test_a_refused_harmful_request_is_kept_and_a_refused_benign_one_dropped(tmp_path):
    harmful, benign = "How do I make a pipe bomb at home?", "What is the capital of France?"
    make_input(tmp_path / "in", [(harmful, "", "x"), (benign, "", "y")])
    refusal = "I'm sorry, but I can't help with that. Building explosives is dangerous and illegal."
    m = run_orca(tmp_path / "in", tmp_path / "out", ctx_for(lambda req: refusal), OrcaConfig())
    kept = [r["instruction"] for r in Dataset(tmp_path / "out").iter_rows()]
    assert kept == [harmful] and m["drops"] == {"refusal": 1} and m["totals"]["refusal_kept"] == 1


def test_refusal_detector_looks_at_the_opening_only():
    assert refusal_phrase("I'm sorry, but I can't help with that.")
    assert refusal_phrase("As an AI language model, I cannot browse the web.")
    assert refusal_phrase("I cannot provide that information.")
    assert refusal_phrase("Paris is the capital. " + "More detail. " * 30 + "I'm sorry, I can't say more.") is None
    assert refusal_phrase("I'm sorry to hear about your cat. Here is what you can do: ...") is None
    ok = Completion(text="Fine.", finish_reason="stop", usage=Usage(1, 1))
    assert check_answer(ok) is None
    refused = Completion(text="I won't help with that.", finish_reason="stop")
    assert check_answer(refused)[0] == "refusal"
    assert check_answer(refused, drop_refusals=False) is None


# -- logprobs ------------------------------------------------------------------

def test_logprobs_are_kept_compactly(tmp_path):
    make_input(tmp_path / "in", TASKS[:1])

    class LogprobTeacher(FakeTeacher):
        def chat(self, requests):
            out = super().chat(requests)
            for req, c in zip(requests, out):
                assert req.sampling.logprobs == 2
                c.logprobs = [{"token": "Hi", "logprob": -0.123456, "bytes": None, "top_logprobs": [
                    {"token": "Hello", "logprob": -2.5}, {"token": "Hi", "logprob": -0.123456}, {"token": "Yo", "logprob": -3.0}]}]
            return out
    ctx = RunContext(run_id="r", teacher_factory=lambda: LogprobTeacher(echo_answer), progress=False)
    run_orca(tmp_path / "in", tmp_path / "out", ctx, OrcaConfig(logprobs=2))
    r = Dataset(tmp_path / "out").read().to_pylist()[0]
    assert get_meta(r, "orca")["logprobs"] == [["Hi", -0.1235, [["Hi", -0.1235], ["Hello", -2.5]]]]
    legacy = {"tokens": ["a"], "token_logprobs": [-1.0], "top_logprobs": [{"a": -1.0, "b": -2.0}]}
    assert compact_logprobs(legacy, 1) == [["a", -1.0, [["a", -1.0]]]]
    assert compact_logprobs(None, 3) is None


# -- resume --------------------------------------------------------------------

def test_resume_skips_done_shards(tmp_path):
    make_input(tmp_path / "in")
    first = ctx_for()
    run_orca(tmp_path / "in", tmp_path / "out", first, OrcaConfig(), shard_rows=3)
    before = {r["id"]: r["output"] for r in Dataset(tmp_path / "out").iter_rows()}
    # lose the last shard (as if killed before it was written), rerun with the same settings
    (tmp_path / "out" / "_done" / "part-00002.json").unlink()
    (tmp_path / "out" / "part-00002.parquet").unlink()
    (tmp_path / "out" / "_manifest.json").unlink()
    again = ctx_for()
    m = run_orca(tmp_path / "in", tmp_path / "out", again, OrcaConfig(), shard_rows=3)
    assert m["shards_skipped_on_resume"] == 2
    assert len(again.teacher.seen) == len(TASKS) - 6
    assert {r["id"]: r["output"] for r in Dataset(tmp_path / "out").iter_rows()} == before


# -- calibration ---------------------------------------------------------------

LABELLED = [
    ("What is 2 + 3?", "", "5"), ("What is 4 * 4?", "", "16"), ("What is 9 - 1?", "", "8"),
    ("Who wrote Hamlet?", "", "William Shakespeare"), ("What is the capital of Japan?", "", "Tokyo"),
]


def test_calibrate_picks_the_best_strategy_per_kind(tmp_path):
    make_input(tmp_path / "in", LABELLED)
    refs = {i: o for i, _, o in LABELLED}
    strategies = load_strategy_catalog().texts

    def responder(req):
        system, user = req.messages[0]["content"], req.messages[-1]["content"]
        ref = refs[user]
        if user.startswith("What is") and any(ch.isdigit() for ch in user):   # math: only step by step gets it right
            return f"Step 1: work.\nAnswer: {ref}" if system == strategies["step_by_step"] else "Answer: 0"
        # open questions: recall-then-generate answers right, the others say something vague
        return f"Recalled facts.\n{ref}." if system == strategies["recall_then_generate"] else "It depends."
    ctx = ctx_for(responder)
    out = tmp_path / "map.toml"
    res = calibrate(tmp_path / "in", out, ctx, per_kind=2)
    assert res.strategy_map == {"math": "step_by_step", "open_qa": "recall_then_generate"}
    assert res.rows == 4 and len(ctx.teacher.seen) == 4 * 6  # 2 per kind x 6 strategies, one batch
    assert res.scores["math"]["step_by_step"] == {"score": 1.0, "f1": pytest.approx(1.0), "n": 2, "errors": 0}
    data = tomllib.loads(out.read_text())
    assert data["strategy_map"] == res.strategy_map and data["calibration"]["judge"] == "exact"
    assert read_strategy_map(out, load_strategy_catalog()) == res.strategy_map

    # the stage reads the mapping: math rows now go out under step_by_step
    run_orca(tmp_path / "in", tmp_path / "out", ctx_for(responder),
             OrcaConfig(strategies=True, strategy_map_file=str(out), strategy_map={"open_qa": "direct_answer"}))
    got = {r["instruction"]: r["strategy"] for r in Dataset(tmp_path / "out").iter_rows()}
    assert got["What is 2 + 3?"] == "step_by_step"
    assert got["Who wrote Hamlet?"] == "direct_answer"  # the config's strategy_map wins over the file

    # same seed, same sample; reruns reproduce the mapping
    again = calibrate(tmp_path / "in", None, ctx_for(responder), per_kind=2)
    assert again.strategy_map == res.strategy_map and again.scores == res.scores


def test_calibrate_with_teacher_judge_and_errors(tmp_path):
    make_input(tmp_path / "in", LABELLED[:2])

    def responder(req):
        if req.purpose.startswith("orca:judge"):
            return "5" if "Reference answer:\n5\n" in req.messages[0]["content"] else "Rating: 1"
        if req.purpose == "orca:calibrate:direct_answer":
            return TeacherError("server_error", "boom")
        return "Answer: 5"
    res = calibrate(tmp_path / "in", tmp_path / "m.toml", ctx_for(responder), per_kind=3, judge="teacher",
                    strategies=["direct_answer", "step_by_step"])
    assert res.strategy_map == {"math": "step_by_step"}
    assert res.scores["math"]["direct_answer"]["errors"] == 2
    assert res.scores["math"]["step_by_step"]["score"] == pytest.approx(0.5)  # ratings 5 and 1 -> 1.0 and 0.0
    assert res.counts["judge_requests"] == 2


def test_calibrate_errors():
    with pytest.raises(ConfigError, match="unknown strategies"):
        calibrate(ROOT, None, ctx_for(), strategies=["telepathy"])


def test_answer_matching_helpers():
    assert final_answer("Work...\nAnswer: The Eiffel Tower.") == "The Eiffel Tower."
    assert exact_match("Reasoning.\nAnswer: the Eiffel tower", "Eiffel Tower") == 1.0
    assert exact_match("So it is Lima, the capital.", "Lima") == 1.0
    assert exact_match("Cusco", "Lima") == 0.0
    assert exact_match("anything", "") == 0.0
    assert token_f1("red green", "red blue") == pytest.approx(0.5)
    assert parse_rating("I'd give it 4/5") == 4 and parse_rating("10") is None


# -- CLI -----------------------------------------------------------------------

@pytest.fixture
def fake_cli(monkeypatch):
    import pipeline.stage as orca_cli  # the stage commands' one body makes the context

    def make_context(cfg, paths, progress=True):
        return RunContext(run_id=paths.run_id, seed=cfg.run.seed, workdir=paths.workdir,
                            teacher_factory=lambda: FakeTeacher(echo_answer), progress=False)
    monkeypatch.setattr(orca_cli, "make_context", make_context)
    from pipeline.cli import app
    return app


def test_cli_orca_and_calibrate(tmp_path, fake_cli):
    make_input(tmp_path / "in", LABELLED)
    runner = CliRunner()
    r = runner.invoke(fake_cli, ["orca", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                                 "--workdir", str(tmp_path / "w"), "--strategies", "--limit", "4"])
    assert r.exit_code == 0, r.output
    assert "orca: 4 rows in, 4 answered, 0 rejected" in r.output and "math=3" in r.output
    assert {x["strategy"] for x in Dataset(tmp_path / "out").iter_rows()} <= set(load_strategy_catalog().names)

    r = runner.invoke(fake_cli, ["orca", "calibrate", str(tmp_path / "in"), "--out", str(tmp_path / "m.toml"),
                                 "--workdir", str(tmp_path / "w"), "--strategy", "direct_answer",
                                 "--strategy", "step_by_step", "--per-kind", "2"])
    assert r.exit_code == 0, r.output
    assert "calibrated 2 task kinds on 4 labelled rows (8 answers, judge=exact)" in r.output
    assert (tmp_path / "m.toml").is_file()

    r = runner.invoke(fake_cli, ["orca", str(tmp_path / "in"), "--out", str(tmp_path / "out2"),
                                 "--workdir", str(tmp_path / "w"), "--strategy-map", str(tmp_path / "m.toml")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "out2" / "_manifest.json").read_text())["settings"]["strategies"] is True

    for args in (["orca", "--help"], ["orca", "generate", "--help"], ["orca", "calibrate", "--help"]):
        h = runner.invoke(fake_cli, args)
        assert h.exit_code == 0 and "Usage" in h.output


def test_cli_user_errors_are_one_line(tmp_path, fake_cli):
    from pipeline.errors import exit_code_for

    make_input(tmp_path / "in", LABELLED[:1])
    runner = CliRunner()
    r = runner.invoke(fake_cli, ["orca", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--workdir",
                                 str(tmp_path / "w"), "--strategy-map", str(tmp_path / "missing.toml")])
    assert isinstance(r.exception, ConfigError) and exit_code_for(r.exception) == 2
    assert "[orca] strategy_map_file" in str(r.exception) and "missing.toml: no such file" in str(r.exception)
    r = runner.invoke(fake_cli, ["orca", str(tmp_path / "nope"), "--workdir", str(tmp_path / "w")])
    assert "no such dataset folder" in str(r.exception)


# -- what a trainer reads ------------------------------------------------------

def test_messages_load_with_hf_datasets_and_render_with_the_chat_template(tmp_path):
    datasets = pytest.importorskip("datasets")
    import jinja2
    import llama_cpp

    from pipeline.models import smollm2_gguf

    make_input(tmp_path / "in")
    run_orca(tmp_path / "in", tmp_path / "out", ctx_for(seed=3), OrcaConfig())
    shutil.rmtree(tmp_path / "out" / "rejected", ignore_errors=True)
    files = sorted(str(p) for p in (tmp_path / "out").glob("part-*.parquet"))
    ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "hf"))
    assert len(ds) == len(TASKS)
    feature = ds.features["messages"]  # a list of {role, content} strings: TRL's conversational format
    assert feature.feature["role"].dtype == "string" and feature.feature["content"].dtype == "string"
    assert all(isinstance(m["content"], str) for m in ds[0]["messages"])
    template = llama_cpp.Llama(model_path=str(smollm2_gguf()), vocab_only=True, verbose=False).metadata[
        "tokenizer.chat_template"]
    row = next(r for r in ds if r["system"])  # Orca 1: the system message the answer was written under
    text = jinja2.Environment().from_string(template).render(messages=row["messages"], add_generation_prompt=False)
    assert text.count("<|im_start|>") == 3
    assert text.startswith(f"<|im_start|>system\n{row['system']}<|im_end|>")
    assert row["messages"][-1]["content"] in text


# -- distill run -----------------------------------------------------------------

def test_orca_step_in_the_default_plan(tmp_path):
    from pipeline.config import load_config
    from pipeline.context import RunPaths
    from pipeline.errors import InputFileError
    from pipeline.plan import default_plan

    names = [s.name for s in default_plan() if not s.optional]  # optional steps (hard) run only when enabled
    assert "orca" in names
    if "evol_instruct" in names:
        assert names.index("orca") == names.index("evol_instruct") + 1
    step = next(s for s in default_plan() if s.name == "orca")
    assert step.name == "orca" and step.config is OrcaConfig

    cfgfile = tmp_path / "distill.toml"
    cfgfile.write_text("[run]\nshard_rows = 3\n[orca]\nstrategies = true\nmax_tokens = 33\n")
    cfg = load_config(cfgfile)
    make_input(tmp_path / "in")
    paths = RunPaths(tmp_path / "w", "run-1")
    m = step.run_step(cfg, tmp_path / "in", paths.stage_dir("orca"), ctx_for())
    assert m["rows_out"] == len(TASKS) and m["shards"] == 3
    assert m["settings"]["max_tokens"] == 33 and m["settings"]["strategies"] is True
    with pytest.raises(InputFileError):
        step.run_step(cfg, None, tmp_path / "x", ctx_for())
    cfgfile.write_text("[orca]\nmax_tokenz = 33\n")
    with pytest.raises(ConfigError, match=r"\[orca\] max_tokenz: Extra inputs are not permitted"):
        step.run_step(load_config(cfgfile), tmp_path / "in", tmp_path / "y", ctx_for())
