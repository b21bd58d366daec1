"""Self-Instruct parsing and filters on recorded completions: every rule with its exact reason."""

from __future__ import annotations

import random

import pytest

from pipeline.stages.self_instruct import alpaca, bootstrap, instances
from pipeline.stages.self_instruct.config import SelfInstructConfig
from pipeline.stages.self_instruct.instances import Instance, filter_instances
from pipeline.stages.self_instruct.seeds import SeedTask

CFG = SelfInstructConfig()


def texts(reply: str, cfg: SelfInstructConfig = CFG) -> list[str]:
    return [i.text for i in bootstrap.parse_items(reply, cfg)]


# -- the bootstrap prompt ---------------------------------------------------------

def test_prompt_numbers_eight_tasks_and_opens_item_nine():
    seeds = [f"Seed task number {i}:  with   spaces:" for i in range(20)]
    machine = ["Machine task one", "Machine task two", "Machine task three"]
    chosen = bootstrap.sample_in_context(seeds, machine, CFG, random.Random(3))
    assert len(chosen) == 8
    assert sum(c in machine for c in chosen) == 2 and sum(c in seeds for c in chosen) == 6
    prompt = bootstrap.render_prompt(chosen, CFG)
    lines = prompt.splitlines()
    assert lines[-1] == "9."
    assert [ln.split(".")[0] for ln in lines[-9:-1]] == [str(i) for i in range(1, 9)]
    # whitespace collapsed and trailing colon removed, as in the paper
    assert any(ln.endswith("with spaces") for ln in lines)
    assert "up to item 15" in prompt and "no blank lines" in prompt
    assert "\n\n" not in prompt.split("\n\n", 1)[1]   # the list is single-spaced: the blank-line stop fits it


def test_the_paper_stop_sequences_are_sent():
    assert bootstrap.stop_sequences(CFG) == ("\n\n", "\n16", "16.", "16 .")   # the official stop_sequences
    assert bootstrap.stop_sequences(SelfInstructConfig(stop_at_blank_line=False)) == ("\n16", "16.", "16 .")
    assert bootstrap.stop_sequences(SelfInstructConfig(last_item=12)) == ("\n\n", "\n13", "13.", "13 .")


def test_first_round_uses_only_seeds_and_shuffles_reproducibly():
    seeds = [f"Seed {i}" for i in range(30)]
    a = bootstrap.sample_in_context(seeds, [], CFG, random.Random(7))
    b = bootstrap.sample_in_context(seeds, [], CFG, random.Random(7))
    c = bootstrap.sample_in_context(seeds, [], CFG, random.Random(8))
    assert a == b and a != c and len(a) == 8 and set(a) <= set(seeds)


# -- parsing the numbered list ------------------------------------------------------

def test_completion_style_reply_continues_item_nine():
    reply = " Name three rivers in Europe.\n10. Explain how a bicycle gear works.\n11. Give a synonym for happy."
    assert texts(reply) == ["Name three rivers in Europe.", "Explain how a bicycle gear works.", "Give a synonym for happy."]


def test_chat_reply_repeating_numbers_is_read_by_position():
    reply = "9. Name three rivers\n10. Explain gears\n11 . Odd spacing"
    items = bootstrap.parse_items(reply, CFG)
    assert [i.position for i in items] == [1, 2, 3]
    assert [i.text for i in items] == ["Name three rivers", "Explain gears", "Odd spacing"]
    renumbered = "1. First task here\n2. Second task here"
    assert texts(renumbered) == ["First task here", "Second task here"]


def test_capitalisation_keeps_acronyms_by_default_and_the_paper_mode_is_an_option():
    reply = "9. translate the SQL query into plain English"
    assert texts(reply) == ["Translate the SQL query into plain English"]  # first_letter (docs/DEPARTURES.md)
    assert texts(reply, SelfInstructConfig(capitalize="paper")) == ["Translate the sql query into plain english"]
    assert texts(reply, SelfInstructConfig(capitalize="none")) == ["translate the SQL query into plain English"]


def test_chat_preamble_is_flagged():
    items = bootstrap.parse_items("Here are more tasks:\n1. Do one thing well\n2. Do another", CFG)
    assert items[0].preamble and not items[1].preamble
    single = bootstrap.parse_items("A single task that ends with a colon:", CFG)
    assert not single[0].preamble


@pytest.mark.parametrize("lead", [
    "Sure! Here are some new tasks:", "Here are 8 more instructions:", "Sure! Here are some new tasks.",
    "Certainly, here you go", "Here are seven new tasks that differ from the list", "Okay.",
    "Below are the next items", "1. The following tasks are different from the ones already listed:",
])
def test_a_chat_lead_in_is_not_a_task_and_takes_no_item_position(lead):
    items = bootstrap.parse_items(lead + "\n9. Name three rivers in Europe\n10. Explain how a gear works", CFG)
    assert [(i.position, i.preamble) for i in items] == [(0, True), (1, False), (2, False)]
    assert [i.text for i in items[1:]] == ["Name three rivers in Europe", "Explain how a gear works"]
    # the blank-line stop cuts a reply that opens with a lead-in right after it: the lead-in is all there is
    only = bootstrap.parse_items(lead.split(". ", 1)[-1] if lead[0].isdigit() else lead, CFG)
    assert len(only) == 1 and only[0].preamble and only[0].position == 0


@pytest.mark.parametrize("task", [
    "Great Britain is made of which countries?", "Here is a paragraph about dogs; summarize it in a sentence.",
    "Okay or not: judge whether the plan is safe",
    "Below the waterline, what keeps a ship stable?", "Sure-footed animals: name three and say why",
])
def test_a_task_that_looks_a_little_like_a_lead_in_is_still_a_task(task):
    items = bootstrap.parse_items(f" {task}\n10. Explain how a gear works", CFG)
    assert [(i.position, i.preamble) for i in items] == [(1, False), (2, False)]
    assert not bootstrap.parse_items(task, CFG)[0].preamble


def test_multiline_item_whitespace_is_collapsed():
    assert texts("9. Write a story\n   about   a cat\n10. Next") == ["Write a story about a cat", "Next"]


# -- instruction filters, in the paper's order ---------------------------------------

@pytest.mark.parametrize("text, reason", [
    ("", "empty"),
    ("Three words only", "too_few_words"),
    ("Word " * 151, "too_many_words"),
    ("Describe the image in two sentences", "blacklisted_keyword"),
    ("Summarize the files in this folder", "blacklisted_keyword"),
    ("Explain how to go to the station by bus", "blacklisted_keyword"),
    ("Write a program that sorts a list of numbers", "write_a_program"),
    ("Write a Program to reverse a string quickly", "write_a_program"),
    ("\"Quote this sentence back to me\" please now", "starts_with_punctuation"),
    ("Ünderline the verbs in the sentence below", "starts_with_non_ascii"),
])
def test_each_filter_reason(text, reason):
    got = bootstrap.InstructionFilter(CFG).check(text.strip() if reason != "too_many_words" else text)
    assert got is not None and got[0] == reason


def test_filters_keep_good_instructions_and_respect_word_boundaries():
    f = bootstrap.InstructionFilter(CFG)
    assert f.check("Name four animals that live in the desert.") is None
    assert f.check("Explain why mapping software needs satellites.") is None   # 'mapping' is not 'map'
    assert f.check("Profile the plotting of a mystery novel") is None          # 'plotting' is not 'plot'
    assert f.check("Four words are here") is None                                # more than 3 words


def test_filter_order_and_config():
    f = bootstrap.InstructionFilter(CFG)
    # a 3-word blacklisted instruction is dropped for its length first (paper order)
    assert f.check("Draw a cat")[0] == "too_few_words"
    assert bootstrap.InstructionFilter(SelfInstructConfig(blacklist=[])).check("Describe the image in detail please") is None
    alp = bootstrap.InstructionFilter(SelfInstructConfig(mode="alpaca"))
    assert alp.check("Compose a short piece of music for piano")[0] == "blacklisted_keyword"
    assert f.check("Compose a short piece of music for piano") is None


# -- classification identification ---------------------------------------------------

def test_classification_prompt_and_answers():
    prompt = instances.classify_prompt("Is the email urgent or not?")
    assert prompt.endswith("Task: Is the email urgent or not?\nIs it classification?")
    assert prompt.count("Is it classification? Yes") == 12 and prompt.count("Is it classification? No") == 19
    for ans in ("Yes", " yes", "YES\n"):
        assert instances.is_classification_answer(ans)
    for ans in ("No", "", None, "Task: x"):
        assert not instances.is_classification_answer(ans)


@pytest.mark.parametrize("reply", [
    "Yes.", "yes!", "yES", "Answer: Yes", "answer:yes.", "A: Yes", "**Yes**", '"Yes"', "Is it classification? Yes",
    "Yes, it is.", "Yes, its answer is one label from a fixed set.", "Yes\nTask: the next one",
])
def test_a_chat_yes_is_yes(reply):
    assert instances.classification_verdict(reply) == "yes" and instances.is_classification_answer(reply)


@pytest.mark.parametrize("reply", ["No.", "no", "Answer: No", "No, it is not.", "**No**", "No, the answer is free text.", "No, no.", "No, it is not."])
def test_a_chat_no_is_no(reply):
    assert instances.classification_verdict(reply) == "no" and not instances.is_classification_answer(reply)


@pytest.mark.parametrize("reply", [
    "", None, "Answer:", "Maybe", "Sure", "Nope", "Yesterday", "Yes-man", "No idea", "Not sure", "Yes or no",
    "Yes and no", "Yes, it is not", "Yes, but the labels are open-ended", "The answer is yes", "Task: Write a poem",
    "Yes, because its answer is picked from a small set of labels such as good or bad or neutral",
])
def test_an_unclear_reply_stays_unclear(reply):
    # unclear is not yes: the task takes the input-first path, as every non-Yes did in the paper
    assert instances.classification_verdict(reply) == "unclear" and not instances.is_classification_answer(reply)


# -- instance parsing and filters --------------------------------------------------------

def test_parse_generation_examples_and_single_output():
    text = "Example 1\nInput: 3 + 4\nOutput: 7\nExample 2\nSum: 10 + 5\nOutput: 15 Input: extra junk"
    got = instances.parse_generation(text)
    assert got == [Instance("3 + 4", "7"), Instance("Sum: 10 + 5", "15")]
    assert instances.parse_generation("Output: A calm blue sea.") == [Instance("", "A calm blue sea.")]
    # a chat model answering a no-input task directly, without the "Output:" label: its one output
    assert instances.parse_generation("Dear Mum,\nthank you.") == [Instance("", "Dear Mum,\nthank you.")]
    # a reply that is a new task line is no answer
    assert instances.parse_generation("Task: What is the name of the post?") == []
    assert instances.parse_generation("  \n") == []
    # a chat model echoing the task line first
    echo = "Task: Add the numbers.\nExample 1\nNumbers: 1, 2\nOutput: 3"
    assert instances.parse_generation(echo) == [Instance("Numbers: 1, 2", "3")]


def test_parse_classification_label_first():
    text = "Class label: Positive\nReview: Lovely.\nClass label: Negative\nReview: Awful.\nClass label: Neutral"
    assert instances.parse_classification(text) == [
        Instance("Review: Lovely.", "Positive"), Instance("Review: Awful.", "Negative"), Instance("", "Neutral")]
    assert instances.parse_classification("Positive: lovely") == []


def test_instance_filters_reasons():
    items = [Instance("a", "a"), Instance("b", ""), Instance("c:", "x"), Instance("d", "y:"),
             Instance("e", "ok"), Instance("e", "ok"), Instance("", "fine")]
    kept, dropped = filter_instances(items, truncated=False, max_instances=5, rng=random.Random(0))
    assert kept == [Instance("e", "ok"), Instance("", "fine")]
    assert [d.reason for d in dropped] == ["input_equals_output", "empty_output", "ends_with_colon",
                                           "ends_with_colon", "duplicate_instance"]


def test_truncated_answer_drops_last_instance():
    kept, dropped = filter_instances([Instance("a", "1"), Instance("b", "2")], True, 5, random.Random(0))
    assert kept == [Instance("a", "1")] and dropped[0].reason == "instance_truncated"


def test_conflicting_outputs_drop_the_whole_task():
    items = [Instance("x", "1"), Instance("y", "2"), Instance("x", "3")]
    kept, dropped = filter_instances(items, False, 5, random.Random(0))
    assert kept == [] and sorted(d.reason for d in dropped) == ["conflicting_outputs"] * 3
    # the same empty input with different outputs is not a conflict (tasks without input)
    kept, _ = filter_instances([Instance("", "1"), Instance("", "2")], False, 5, random.Random(0))
    assert len(kept) == 2


def test_at_most_max_instances_kept_at_random_reproducibly():
    items = [Instance(f"in {i}", f"out {i}") for i in range(8)]
    a, da = filter_instances(items, False, 5, random.Random(1))
    b, _ = filter_instances(items, False, 5, random.Random(1))
    assert len(a) == 5 and a == b and [d.reason for d in da] == ["over_max_instances"] * 3
    assert [items.index(i) for i in a] == sorted(items.index(i) for i in a)  # input order kept


# -- alpaca mode ----------------------------------------------------------------------------

def test_alpaca_prompt_and_parse():
    seeds = [SeedTask("Give a synonym for big.", [("", "Large")]),
             SeedTask("Add the numbers:", [("2 and 3", "5")]),
             SeedTask("Name a colour.", [("", "Blue")])]
    prompt = alpaca.render_prompt(seeds, CFG)
    assert prompt.endswith("###\n4. Instruction:") and "<noinput>" in prompt and "Add the numbers\n" in prompt
    reply = (" Reverse the word.\n4. Input:\nstone\n4. Output:\nenots\n###\n5. Instruction: Name a planet.\n"
             "5. Input:\n<noinput>\n5. Output:\nMars\n###\n6. Instruction: Broken item with no output")
    got = alpaca.parse_reply(reply)
    assert [(t.instruction, t.input, t.output, t.malformed) for t in got] == [
        ("Reverse the word.", "stone", "enots", ""), ("Name a planet.", "", "Mars", ""),
        ("Broken item with no output", "", "", "no Output field")]
    assert alpaca.stop_sequences(CFG) == ("\n20", "20.")
