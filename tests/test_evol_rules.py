"""Evol-Instruct elimination rules and parsing, on crafted and on recorded teacher completions."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config, stage_config
from pipeline.stages.evol_instruct import OPERATIONS, EvolConfig
from pipeline.stages.evol_instruct.eliminate import (
    check_answer,
    check_evolution,
    check_judge,
    is_degenerate,
    parse_judge,
    stop_words,
)
from pipeline.stages.evol_instruct.operations import (
    Operations,
    parse_evolution,
    prompt_text,
)
from pipeline.teacher.base import Completion, TeacherError

RECORDED = Path(__file__).parent / "data" / "evol_recorded_completions.json"
CFG = EvolConfig()


def comp(text, finish="stop"):
    return Completion(text=text, finish_reason=finish)


# --- rule (a): the equality judge and identical text -------------------------

@pytest.mark.parametrize("reply,verdict", [
    ("Equal", "equal"),
    ("equal.", "equal"),
    ("Not Equal", "not_equal"),
    ("NOT EQUAL", "not_equal"),
    ("Not  equal", "not_equal"),
    ("not-equal", "not_equal"),
    ("The prompts are unequal.", "not_equal"),
    ("Equal? No: Not Equal.", "not_equal"),
    ("They are equally hard.", "unclear"),   # 'equally' is not the word 'equal'
    ("I cannot tell.", "unclear"),
    ("", "unclear"),
    (None, "unclear"),
])
def test_judge_parse_checks_not_equal_before_equal(reply, verdict):
    assert parse_judge(reply) == verdict


def test_judge_equal_fails_not_equal_keeps():
    verdict, drop = check_judge(comp("Equal"), CFG)
    assert verdict == "equal" and drop.reason == "judged_equal" and "Equal" in drop.detail
    verdict, drop = check_judge(comp("Not Equal"), CFG)
    assert verdict == "not_equal" and drop is None


def test_judge_unclear_keep_or_drop_as_configured():
    assert check_judge(comp("Perhaps"), CFG) == ("unclear", None)
    verdict, drop = check_judge(comp("Perhaps"), EvolConfig(judge_unclear="drop"))
    assert verdict == "unclear" and drop.reason == "judge_unclear"


def test_judge_error_is_a_drop():
    verdict, drop = check_judge(Completion(text=None, error=TeacherError("timeout", "slow")), CFG)
    assert verdict == "error" and drop.reason == "judge_error" and "timeout" in drop.detail


def test_identical_text_fails_without_the_judge():
    parent = "Give three tips for staying healthy."
    drop = check_evolution(parent, "  give three TIPS for staying   healthy. ", comp("x"), "deepening", CFG)
    assert drop.reason == "identical_to_parent"


# --- rule (d): meta-term leakage ---------------------------------------------

@pytest.mark.parametrize("text,term", [
    ("Rewrite the given prompt so it is harder.", "given prompt"),
    ("#Rewritten Prompt# Name two rivers.", "rewritten prompt"),
    ("Here is the CREATED PROMPT: list rare birds.", "created prompt"),
])
def test_leakage_of_meta_terms(text, term):
    drop = check_evolution("Name a river.", text, comp(text), "deepening", CFG)
    assert drop.reason == "prompt_leakage" and term in drop.detail


def test_leakage_terms_are_configurable():
    cfg = EvolConfig(meta_terms=["Prompt Creator"])
    assert check_evolution("Name a river.", "The prompt creator asks: name a river in Peru.",
                           comp("x"), "breadth", cfg).reason == "prompt_leakage"
    # the default terms are gone with the override
    assert check_evolution("Name a river.", "Using the given prompt, name a river in Peru.",
                           comp("x"), "breadth", cfg) is None


# --- the pipeline's own evolution checks -------------------------------------

def test_evolution_error_truncated_empty_too_long():
    p = "Name a river."
    err = Completion(text=None, error=TeacherError("server_error", "500 from server"))
    assert check_evolution(p, "", err, "deepening", CFG).reason == "evolve_error"
    assert check_evolution(p, "Name a long", comp("Name a long", "length"), "deepening", CFG).reason == "evolution_truncated"
    assert check_evolution(p, "", comp("#Rewritten Prompt#:"), "deepening", CFG).reason == "empty_evolution"
    long = "Name a river " + "and more " * 30          # 3 words parent: 3 * 3 + 40 = 49 allowed
    drop = check_evolution(p, long, comp(long), "deepening", CFG)
    assert drop.reason == "too_long" and "49 allowed" in drop.detail
    # complicate-input may add data: the same text fits its larger ratio (8 * 3 + 40)
    assert check_evolution(p, long, comp(long), "complicate_input", CFG) is None


def test_length_ratio_is_configurable():
    text = "Name a river in Peru and say how long it is and where it starts."
    assert check_evolution("Name a river.", text, comp(text), "deepening", CFG) is None
    tight = EvolConfig(max_length_ratio={"deepening": 1.0}, length_slack_words=2)
    assert check_evolution("Name a river.", text, comp(text), "deepening", tight).reason == "too_long"


# --- rules (b) and (c) on the answer -----------------------------------------

def test_sorry_rule_short_long_and_apology_tasks():
    short = "Sorry, I can't answer that."
    assert check_answer("Predict next year's lottery numbers.", comp(short), CFG).reason == "answer_sorry"
    long = "Sorry for the wait. " + "Here is a detailed explanation of the topic. " * 12
    assert len(long.split()) >= 80
    assert check_answer("Explain tides.", comp(long), CFG) is None
    # an instruction about apologies: "sorry" is content
    assert check_answer("Write a two-line note saying sorry to a friend.", comp(short), CFG) is None
    assert check_answer("Draft an apology for a late delivery.", comp(short), CFG) is None
    # the threshold is the paper's 80 words, configurable
    assert check_answer("Explain tides.", comp(long), EvolConfig(sorry_max_words=200)).reason == "answer_sorry"


def test_degenerate_answer_only_stop_words_and_punctuation():
    assert is_degenerate("It is what it is, and so on!")
    assert is_degenerate("...?!")
    assert is_degenerate("I don't; they'd have been there.")
    assert not is_degenerate("I don't know.")
    assert not is_degenerate("Paris.")
    assert not is_degenerate("42")
    assert not is_degenerate("It is blue.")
    assert check_answer("Say something.", comp("Is it? It is."), CFG).reason == "answer_degenerate"


def test_stop_word_list_is_ours_and_loaded():
    sw = stop_words()
    assert {"the", "and", "of", "don't"} <= sw
    assert "sorry" not in sw and "yes" not in sw and "paris" not in sw


def test_answer_error_empty_truncated():
    err = Completion(text=None, error=TeacherError("timeout", "slow"))
    assert check_answer("Explain tides.", err, CFG).reason == "answer_error"
    assert check_answer("Explain tides.", comp("  \n"), CFG).reason == "answer_empty"
    assert check_answer("Explain tides.", comp("Tides are caused", "length"), CFG).reason == "answer_truncated"
    assert check_answer("Explain tides.", comp("Tides are caused", "length"),
                        EvolConfig(drop_truncated_answers=False)) is None


# --- parsing the rewrite ------------------------------------------------------

@pytest.mark.parametrize("reply,expected", [
    ("#Rewritten Prompt#: Name two rivers.", "Name two rivers."),
    ("#Given Prompt#:\nName a river.\n\n#Rewritten Prompt#:\nName two rivers in Peru.", "Name two rivers in Peru."),
    ("Rewritten Prompt#:\n\"Name two rivers.\"", "Name two rivers."),
    ("#Created Prompt#: List three rare fungi.", "List three rare fungi."),
    ("Name two rivers.", "Name two rivers."),
    ("", ""),
    (None, ""),
])
def test_parse_evolution(reply, expected):
    assert parse_evolution(reply) == expected


def test_prompt_text_joins_instruction_and_input():
    assert prompt_text({"instruction": "Summarise.", "input": "A long text."}) == "Summarise.\n\nA long text."
    assert prompt_text({"instruction": " Summarise. ", "input": ""}) == "Summarise."


# --- recorded completions from the embedded SmolLM2 teacher -------------------

def _recorded(kind):
    doc = json.loads(RECORDED.read_text(encoding="utf-8"))
    return [r for r in doc["records"] if r["kind"] == kind]


def test_recorded_evolutions_get_the_hand_assigned_outcome():
    recs = _recorded("evolve")
    assert len(recs) >= 10
    for r in recs:
        evolved = parse_evolution(r["reply"])
        drop = check_evolution(r["parent"], evolved, comp(r["reply"], r["finish_reason"]), r["operation"], CFG)
        assert (drop.reason if drop else None) == r["expect"], (r["reply"], drop)


def test_recorded_judge_replies_parse_as_labelled():
    recs = _recorded("judge")
    for r in recs:
        assert parse_judge(r["reply"]) == r["expect"], r["reply"]
    # The trap, as the small model really answered: for two identical prompts it
    # said "No, not equal." The automatic identical-text rule still fails them.
    same = [r for r in recs if r["first"] == r["second"]]
    assert any(parse_judge(r["reply"]) == "not_equal" for r in same)
    for r in same:
        assert check_evolution(r["first"], r["second"], comp(r["second"]), "deepening", CFG).reason == "identical_to_parent"


def test_recorded_answers_get_the_hand_assigned_outcome():
    for r in _recorded("answer"):
        drop = check_answer(r["instruction"], comp(r["reply"], r["finish_reason"]), CFG)
        assert (drop.reason if drop else None) == r["expect"], r["reply"]


# --- operation choice ---------------------------------------------------------

def test_choice_is_seeded_per_seed_record_and_round():
    ops = Operations(CFG)
    a = [ops.choose(7, f"id{i}", 1) for i in range(200)]
    assert a == [ops.choose(7, f"id{i}", 1) for i in range(200)]          # reproducible
    assert a != [ops.choose(8, f"id{i}", 1) for i in range(200)]          # another run seed
    assert a != [ops.choose(7, f"id{i}", 2) for i in range(200)]          # another round
    fmts = {c.data_format for c in a if c.op == "complicate_input"}
    assert fmts and fmts <= set(CFG.data_formats)
    assert all(c.data_format is None for c in a if c.op != "complicate_input")


def test_default_choice_is_uniform_over_six():
    ops = Operations(CFG)
    n = 12000
    counts = Counter(ops.choose(0, f"r{i}", 1).op for i in range(n))
    assert set(counts) == set(OPERATIONS)
    for op in OPERATIONS:
        assert abs(counts[op] / n - 1 / 6) < 0.02, counts


def test_weights_and_disabling():
    n = 8000
    five = Operations(EvolConfig(operations={op: 1.0 for op in OPERATIONS if op != "complicate_input"}))
    counts = Counter(five.choose(0, f"r{i}", 1).op for i in range(n))
    assert "complicate_input" not in counts and len(counts) == 5
    for op in counts:
        assert abs(counts[op] / n - 1 / 5) < 0.02, counts
    skew = Operations(EvolConfig(operations={"deepening": 3, "breadth": 1}))
    counts = Counter(skew.choose(0, f"r{i}", 1).op for i in range(n))
    assert set(counts) == {"deepening", "breadth"}
    assert abs(counts["deepening"] / n - 0.75) < 0.02, counts


def test_config_rejects_bad_operations(tmp_path):
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('[evol_instruct]\noperations = { deepen = 1.0 }\n')
    with pytest.raises(ConfigError, match="unknown operations"):
        stage_config(load_config(cfg_file), "evol_instruct", EvolConfig)
    with pytest.raises(ConfigError, match="weight > 0"):
        stage_config(load_config(None), "evol_instruct", EvolConfig, operations={"breadth": 0})
    with pytest.raises(ConfigError, match="rounds"):
        stage_config(load_config(None), "evol_instruct", EvolConfig, rounds=0)


def test_templates_render_and_carry_meta_markers():
    ops = Operations(CFG)
    from pipeline.stages.evol_instruct.operations import Choice
    for op in OPERATIONS:
        fmt = "JSON" if op == "complicate_input" else None
        text = ops.render(Choice(op, fmt), "Name a river.")
        assert "Name a river." in text and "#Given Prompt#:" in text
        assert text.rstrip().endswith("Prompt#:")
        if fmt:
            assert "JSON" in text
    judge = ops.render_judge("A", "B")
    assert "Equal" in judge and "Not Equal" in judge
    assert len(set(ops.hashes().values())) == len(OPERATIONS) + 1
