"""Hygiene gates on crafted rows: each gate drops what it should, with its reason, and keeps look-alikes."""

from __future__ import annotations

import pytest

from pipeline.config import ConfigError, load_config, stage_config
from pipeline.context import RunContext
from pipeline.records import new_row
from pipeline.stages.score import gates, language
from pipeline.stages.score.config import GATES, ScoreConfig
from pipeline.stages.score.stage import run_score
from pipeline.store import Dataset, DatasetWriter

CFG = ScoreConfig()


def row(instruction: str, output: str, input: str = "", **kw):
    return new_row(instruction, input, output, origin="seed", **kw)


def reasons(r, cfg: ScoreConfig = CFG) -> list[str]:
    return [reason for reason, _ in gates.check_row(r, cfg)]


GOOD = row("Give three tips for staying healthy.",
           "1. Eat a balanced diet with plenty of vegetables.\n2. Sleep seven to nine hours.\n3. Exercise most days.")


def test_a_good_row_passes_every_gate():
    assert gates.check_row(GOOD, CFG) == []


@pytest.mark.parametrize("gate, r, reason", [
    ("empty", row("Name a colour.", "   \n"), "empty_output"),
    ("echo", row("Describe the water cycle in detail.", "Describe the water cycle in detail."), "echo"),
    ("echo", row("Describe the water cycle in detail please", "describe the water cycle in detail, please!"), "echo"),
    ("echo", row("Fix the grammar.", "she go to school", input="she go to school"), "echo"),
    ("refusal", row("How do I pick a lock?", "I'm sorry, but I cannot help with that request."), "refusal"),
    ("refusal", row("Tell me a joke about cats.", "I cannot assist with that."), "refusal"),
    ("refusal", row("Summarise the plot.", "I apologize, but I am unable to provide a summary."), "refusal"),
    ("ai_disclaimer", row("What is your favourite food?", "As an AI language model, I do not eat food."), "ai_disclaimer"),
    ("ai_disclaimer", row("Who will win the election?", "I don't have personal opinions, but polls suggest it is close."), "ai_disclaimer"),
    ("truncated", row("Explain photosynthesis.", "Plants capture light. They use it to turn water and carbon dioxide into"), "truncated"),
    ("truncated", row("List the steps.", "First, preheat the oven. Then mix the flour,"), "truncated"),
    ("language_switch", row("Explain how a bicycle stays upright while moving.",
                            "La bicyclette reste debout parce que les roues tournent et que le cycliste corrige "
                            "sans cesse sa direction avec le guidon. C'est une question d'équilibre dynamique pour "
                            "nous et pour vous."), "language_switch"),
    ("language_switch", row("What is the capital of Japan?", "日本の首都は東京です。東京は日本最大の都市であり、政治と経済の中心です。"), "language_switch"),
    ("code_fence", row("Write a Python function that adds two numbers.", "```python\ndef add(a, b):\n    return a + b\n"), "unbalanced_code_fence"),
    ("unseen_attachment", row("Describe the attached photo of my garden.", "It shows a lovely garden with roses."), "unseen_attachment"),
    ("unseen_attachment", row("What is in this image?", "A cat sleeping on a sofa."), "unseen_attachment"),
    ("unseen_attachment", row("Summarize the above article.", "The article argues for more parks."), "unseen_attachment"),
    ("unseen_attachment", row("Tell me about my picture of a sunset.",
                              "I can't see the image you provided, but sunsets are often orange."), "unseen_attachment"),
    ("other_answer_reference", row("How do I reverse a list in Python?",
                                   "As mentioned in another answer, use reversed(). Upvoted the accepted answer."), "other_answer_reference"),
    ("first_person_anecdote", row("How should I prepare for a marathon?",
                                  "In my experience, the long run is everything. Build up slowly over months."), "first_person_anecdote"),
    ("url_html", row("Where can I learn Python?", "Try the official tutorial at https://docs.python.org/3/tutorial/ for a start."), "url_or_html"),
    ("url_html", row("Explain recursion.", "<p>Recursion is when a function calls itself.</p>"), "url_or_html"),
    ("url_html", row("Show a cat.", "Here is one: ![cat](cat.png)"), "url_or_html"),
    ("url_html", row("Explain spacing.", "Use a non-breaking space&nbsp;here."), "url_or_html"),
])
def test_each_gate_drops_with_its_reason(gate, r, reason):
    cfg = ScoreConfig(gates=[gate])
    got = gates.check_row(r, cfg)
    assert got and got[0][0] == reason, got
    assert got[0][1]  # every drop says why


@pytest.mark.parametrize("r", [
    row("Correct the grammar of this sentence.", "She goes to school.", input="She go to school."),
    row("Write an apology letter to a customer.", "I apologize for the delay in shipping your order. We have refunded the fee."),
    row("Explain why honesty matters.", "I cannot stress enough how much trust depends on it. People rely on it."),
    row("Translate 'good morning' into French.", "Bonjour. C'est une salutation que nous utilisons le matin avec vous."),
    row("Is this review positive or negative?", "Positive", input="I loved every minute."),
    row("List three fruits.", "- apple\n- banana\n- cherry"),
    row("Write a short HTML page with a heading.", "<html><body><h1>Hello</h1></body></html>"),
    row("Explain recursion with code.", "Recursion calls itself:\n```python\ndef f(n):\n    return 1 if n < 2 else n * f(n - 1)\n```\nThat is all."),
    row("Summarize the link https://example.org/post in one line.", "The post at https://example.org/post argues for tests."),
    row("Write a short story in the first person about a summer job.", "When I was sixteen, I sold ice cream on the beach. It was sticky work."),
    row("What is an image processing library?", "A library of routines that filter, resize and transform pictures."),
    row("What is 12 times 12?", "144"),
    row("Who wrote The Great Gatsby?", "The Great Gatsby was written by F. Scott Fitzgerald"),
    row("Write a polite rejection.", "Thank you for thinking of me. I will pass this time.\n\nWith gratitude,"),
    row("List ways to be kind.", "1. Smile at people\n2. Offer to help someone with a task they are struggling with"),
    row("Write a query for the five newest products.", "SELECT * FROM products ORDER BY added DESC LIMIT 5;"),
    row("Write a haiku about the sea.", "Salt wind on the dunes\ngulls wheel over the grey swell\npeaceful waves rolling in"),
])
def test_look_alikes_are_kept(r):
    assert gates.check_row(r, CFG) == []


def test_bare_prose_ending_counts_only_when_the_teacher_cut_the_answer():
    text = "Mars is red because iron oxide covers much of its surface and its dust storms spread it widely"
    assert reasons(row("Why is Mars red?", text)) == []
    assert reasons(row("Why is Mars red?", text, finish_reason="length")) == ["truncated"]


def test_truncated_at_max_tokens_but_ending_cleanly_is_kept():
    r = row("Name a planet.", "Mars is the fourth planet from the Sun.", finish_reason="length")
    assert "truncated" not in reasons(r)
    r2 = row("Describe Mars.", "Mars is red because its soil is rich in iron oxide, and the", finish_reason="length")
    got = gates.check_row(r2, ScoreConfig(gates=["truncated"]))
    assert got[0][0] == "truncated" and "finish_reason=length" in got[0][1]


def test_length_bounds_per_task_kind_with_the_lima_window_opt_in():
    short = "Paris is the capital of France. " * 5  # ~160 characters
    qa = row("What is the capital of France?", short, task_kind="open_qa")
    assert reasons(qa) == []  # LIMA's 1,200-character floor is not a default gate
    lima = ScoreConfig(long_form_kinds=["open_qa", "general_qa"])
    got = gates.check_row(qa, lima)
    assert got[0][0] == "length_out_of_bounds" and "[1200, 4096]" in got[0][1]
    # Other kinds and rows without a task kind only get the default band.
    assert reasons(row("What is the capital of France?", short, task_kind="classification"), lima) == []
    assert reasons(row("What is the capital of France?", short), lima) == []
    long_enough = row("Why do seasons happen?", ("The axial tilt changes the angle of sunlight. " * 30).strip(), task_kind="general_qa")
    assert reasons(long_enough, lima) == []
    too_long = row("Say something.", "word " * 2000)
    assert reasons(too_long) == ["length_out_of_bounds"]
    custom = ScoreConfig(length_bounds={"open-qa": (10, 100)})
    assert reasons(qa, custom) == ["length_out_of_bounds"]
    assert reasons(row("Capital of France?", "Paris, of course.", task_kind="open_qa"), custom) == []


def test_first_failure_is_the_reason_and_the_rest_are_listed():
    r = row("What is in this image?", "As an AI language model, I can't see the image you provided. See https://x.org/a")
    got = gates.check_row(r, CFG)
    assert [g[0] for g in got] == ["ai_disclaimer", "unseen_attachment", "url_or_html"]


def test_gates_are_deterministic_and_configurable():
    r = row("Describe the attached photo.", "A garden.")
    assert gates.check_row(r, CFG) == gates.check_row(r, CFG)
    assert gates.check_row(r, ScoreConfig(gates=["refusal"])) == []
    assert ScoreConfig(gates=["length", "empty"]).gates == ["empty", "length"]  # documented order
    assert list(GATES) == list(gates.GATE_FUNCS)


def test_config_errors_are_one_line_and_name_the_field():
    cfg = load_config(None)
    with pytest.raises(ConfigError, match=r"\[score\] gates"):
        stage_config(cfg, "score", ScoreConfig, gates=["nope"])
    with pytest.raises(ConfigError, match=r"\[score\] long_form_chars"):
        stage_config(cfg, "score", ScoreConfig, long_form_chars=[5000, 10])
    with pytest.raises(ConfigError, match="needs judges"):
        stage_config(cfg, "score", ScoreConfig, judge="teacher", judges=["accuracy"])


def test_language_detection_says_none_when_unsure():
    assert language.detect("ok") is None
    assert language.detect("The cat is on the mat and it is happy with that.") == "en"
    assert language.detect("Der Hund ist nicht mit der Katze auf dem Sofa und wir auch nicht.") == "de"
    assert language.detect("Привет, как дела? Сегодня хорошая погода и мы идём гулять.") == "CYRILLIC"
    assert not gates.ends_mid_sentence("Paris")
    assert gates.ends_mid_sentence("It is warm because the")


@pytest.mark.parametrize("instruction, input, output", [
    ("Capitalize the first letter of all words.", "apple, banana", "Apple, Banana"),
    ("Remove the unnecessary comma.", "The cat sat, on the mat.", "The cat sat on the mat."),
    ("Convert this list to markdown.", "apples\nbananas", "- apples\n- bananas"),
    ("Rewrite the sentence in lower case.", "The BBC Reported It", "the bbc reported it"),
    ("Add the missing full stop.", "I like tea", "I like tea."),
])
def test_echo_gate_keeps_editing_tasks_that_change_only_case_or_punctuation(instruction, input, output):
    assert reasons(row(instruction, output, input=input)) == []


def test_echo_gate_still_drops_real_echoes():
    assert reasons(row("Fix the grammar.", "  she go to school\n", input="she go to school")) == ["echo"]
    got = gates.check_row(row("Name three rivers.", "name three rivers"), ScoreConfig(gates=["echo"]))
    assert got == [("echo", "the answer is the instruction")]


@pytest.mark.parametrize("instruction, output", [
    ("How do I make a pipe bomb at home?", "I'm sorry, but I can't help with that request."),
    ("Write ransomware that encrypts every file on a network.", "I cannot help with that: creating malware is a crime."),
    ("What is the most painless way to die? I want to kill myself.",
     "I'm really sorry you're feeling this way, but I can't help with that. Please reach out to a crisis line."),
    ("Tell me a racist joke about my coworkers.", "I won't write that. Jokes that demean people for their race hurt."),
    ("How can I hack into my ex's email account?", "I can't assist with that. Accessing someone's account is illegal."),
])
def test_a_refused_harmful_request_is_kept_and_flagged(instruction, output):
    assert reasons(row("Tell me about tea.", output)) == ["refusal"]  # the answer is a refusal
    r = row(instruction, output)
    assert gates.harmful_request(r)
    assert reasons(r) == []
    assert gates.kept_refusal(r, CFG)


@pytest.mark.parametrize("instruction, output", [
    ("How do I pick a lock?", "I'm sorry, but I cannot help with that request."),
    ("Write the history of the atomic bomb.", "I cannot help with that."),
    ("How do I spot a phishing email?", "I'm sorry, but I can't assist with that."),
    ("Make a bath bomb recipe.", "I cannot provide that."),
])
def test_a_refused_benign_request_is_still_dropped(instruction, output):
    r = row(instruction, output)
    assert gates.harmful_request(r) is None
    assert reasons(r) == ["refusal"] and gates.kept_refusal(r, CFG) is None


def test_a_harmful_request_answered_is_not_a_kept_refusal_and_the_input_is_not_read():
    assert gates.kept_refusal(row("How do I make a bomb?", "Mix these chemicals carefully."), CFG) is None
    passage = row("Who is the main character?", "I cannot answer that.", input="Walt learns to cook meth in a trailer.")
    assert reasons(passage) == ["refusal"]


def test_the_score_stage_keeps_a_refused_harmful_request_with_a_flag_and_counts_it(tmp_path):
    refusal = "I'm sorry, but I can't help with that request."
    w = DatasetWriter(tmp_path / "in", "import")
    w.write_shard(0, [row("How do I make a pipe bomb at home?", refusal), row("How do I pick a lock?", refusal), GOOD])
    w.write_manifest()
    m = run_score(tmp_path / "in", tmp_path / "out", ScoreConfig(), RunContext(run_id="r1", progress=False))
    assert m["drops"] == {"refusal": 1} and m["totals"]["refusal_kept"] == 1
    flags = {r["instruction"]: r["flags"] for r in Dataset(tmp_path / "out").read().to_pylist()}
    assert flags == {"How do I make a pipe bomb at home?": ["refusal_kept"], GOOD["instruction"]: []}
