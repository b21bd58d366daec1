"""Classification identification and instance generation for accepted instructions.

Pure functions over text: prompts rendered from `prompts/self_instruct/`,
parsers and the paper's instance filters (METHODS.md 1.5-1.7). The stage
sends the requests; this module decides what the answers mean.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Literal

from ...prompts import load_template

CLASSIFY_TEMPLATE = "self_instruct/classify.txt"
INPUT_FIRST_TEMPLATE = "self_instruct/instances_input_first.txt"
OUTPUT_FIRST_TEMPLATE = "self_instruct/instances_output_first.txt"

# The paper's completion model wrote a bare Yes or No. A chat teacher dresses the same verdict up:
# "Yes.", "no, it is not", "Answer: Yes", "**Yes**". The verdict is read from the reply's first line
# when it opens with the word and nothing after it points the other way or hedges; anything else is
# unclear, and an unclear task takes the input-first path, as every non-Yes did in the paper.
_ANSWER_LEAD = re.compile(r"^(?:(?:answer|a)\s*:|is it classification\s*\?)\s*", re.IGNORECASE)
_VERDICT = re.compile(r"(yes|no)(?![\w'-])", re.IGNORECASE)
_HEDGE = re.compile(r"\b(maybe|perhaps|possibly|partly|partially|depends|depending|unclear|idea|not sure|"
                    r"but|however|although|though)\b", re.IGNORECASE)
_DECOR = " \t*_`\"'>"
# "a short sentence starting with it": "Yes, its answer is one label from a fixed set." is 10 words.
MAX_VERDICT_WORDS = 12
Verdict = Literal["yes", "no", "unclear"]


def classify_prompt(instruction: str) -> str:
    return load_template(CLASSIFY_TEMPLATE).render(instruction=instruction.strip()).rstrip()


def classify_stop() -> tuple[str, ...]:
    return ("\n", "Task")


def classification_verdict(text: str | None) -> Verdict:
    """"yes", "no" or "unclear" for a reply to the is-it-classification question."""
    lines = [ln for ln in (text or "").splitlines() if ln.strip(_DECOR)]
    if not lines:
        return "unclear"
    line = lines[0].strip(_DECOR)
    line = _ANSWER_LEAD.sub("", line, count=1).lstrip(_DECOR)
    m = _VERDICT.match(line)
    if m is None:
        return "unclear"
    verdict: Verdict = "yes" if m.group(1).lower() == "yes" else "no"
    rest = line[m.end():]
    other = re.search(r"\b(?:no|not)\b" if verdict == "yes" else r"\byes\b", rest, re.IGNORECASE)
    if other or _HEDGE.search(rest) or len(rest.split()) > MAX_VERDICT_WORDS:
        return "unclear"
    return verdict


def is_classification_answer(text: str | None) -> bool:
    """Classification iff the reply's verdict is a clear yes (the paper: the bare word Yes)."""
    return classification_verdict(text) == "yes"


def instance_template(is_classification: bool) -> str:
    return OUTPUT_FIRST_TEMPLATE if is_classification else INPUT_FIRST_TEMPLATE


def instance_prompt(instruction: str, is_classification: bool) -> str:
    return load_template(instance_template(is_classification)).render(instruction=instruction.strip()).rstrip()


def instance_stop(max_instances: int) -> tuple[str, ...]:
    # The paper stops at "Task:". A chat model may open its reply by echoing
    # "Task: <instruction>", which would stop it before any example; requiring
    # the newline keeps the paper's intent (no second task) without that.
    return (f"Example {max_instances + 1}", "\nTask:")


@dataclass
class Instance:
    input: str
    output: str


@dataclass
class Dropped:
    instance: Instance
    reason: str
    detail: str


_ECHO = re.compile(r"^\s*Task\s*:[^\n]*\n")
_EXAMPLE = re.compile(r"Example\s?\d*\.?")
_OUTPUT = re.compile(r"Output\s*\d*\s*:")
_INPUT_ANY = re.compile(r"Input\s*\d*\s*:")
_INPUT_PREFIX = re.compile(r"^Input\s*\d*\s*:")


def _strip_echo(text: str) -> str:
    return _ECHO.sub("", text, count=1)


def _input_output(text: str) -> tuple[str, str]:
    if _OUTPUT.search(text):
        parts = _OUTPUT.split(text)
        inp, out = parts[0].strip(), parts[1].strip()
    else:
        inp, out = "", text.strip()
    if _INPUT_ANY.search(out):        # a second input/output pair ran on: keep the first output
        out = _INPUT_ANY.split(out)[0].strip()
    inp = _INPUT_PREFIX.sub("", inp).strip()
    return inp, out


_NEW_TASK = re.compile(r"^\s*Task\s*:", re.IGNORECASE)


def parse_generation(text: str) -> list[Instance]:
    """Input-first answer: 'Example k' blocks, or one 'Output:' for tasks with no input.

    A chat model often answers a no-input task directly, without the 'Output:'
    label the demos show; that bare reply is the task's one output. A reply that
    opens with 'Task:' is a new task, not an answer, and yields nothing.
    """
    text = _strip_echo(text).strip()
    if _EXAMPLE.search(text):
        blocks = [b.strip() for b in _EXAMPLE.split(text) if b.strip()]
        return [Instance(*_input_output(b)) for b in blocks]
    if _OUTPUT.search(text):
        return [Instance(*_input_output(text))]
    if text and not _NEW_TASK.match(text):
        return [Instance("", text)]
    return []


def parse_classification(text: str) -> list[Instance]:
    """Output-first answer: 'Class label: X' then the input on the following lines."""
    text = _strip_echo(text)
    if "Class label:" not in text:
        return []
    out = []
    for block in text.split("Class label:")[1:]:
        fields = block.strip().split("\n", 1)
        label = fields[0].strip()
        inp = fields[1].strip() if len(fields) == 2 else ""
        out.append(Instance(inp, label))
    return out


def filter_instances(instances: list[Instance], truncated: bool, max_instances: int,
                     rng: random.Random) -> tuple[list[Instance], list[Dropped]]:
    """The paper's instance rules, in order; every instance is kept or dropped with a reason."""
    kept: list[Instance] = []
    dropped: list[Dropped] = []
    items = list(instances)
    if truncated and items:
        dropped.append(Dropped(items.pop(), "instance_truncated", "the answer was cut by max_tokens"))
    for inst in items:
        if inst.input == inst.output:
            dropped.append(Dropped(inst, "input_equals_output", ""))
        elif inst.output == "":
            dropped.append(Dropped(inst, "empty_output", ""))
        elif inst.input.strip().endswith(":") or inst.output.strip().endswith(":"):
            dropped.append(Dropped(inst, "ends_with_colon", "looks unfinished"))
        else:
            kept.append(inst)
    # Same non-empty input with different outputs: the task is ambiguous, drop all of it.
    seen: dict[str, str] = {}
    for inst in kept:
        if inst.input and seen.setdefault(inst.input, inst.output) != inst.output:
            detail = f"input {inst.input[:60]!r} has different outputs"
            return [], dropped + [Dropped(i, "conflicting_outputs", detail) for i in kept]
    unique: list[Instance] = []
    keys: set[tuple[str, str]] = set()
    for inst in kept:
        key = (inst.input, inst.output)
        if key in keys:
            dropped.append(Dropped(inst, "duplicate_instance", ""))
        else:
            keys.add(key)
            unique.append(inst)
    if len(unique) > max_instances:
        chosen = set(rng.sample(range(len(unique)), max_instances))
        dropped += [Dropped(inst, "over_max_instances", f"kept {max_instances} at random")
                    for i, inst in enumerate(unique) if i not in chosen]
        unique = [inst for i, inst in enumerate(unique) if i in chosen]
    return unique, dropped
