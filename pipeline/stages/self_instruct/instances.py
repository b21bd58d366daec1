"""Classification identification and instance generation for accepted instructions.

Pure functions over text: prompts rendered from `prompts/self_instruct/`,
parsers and the paper's instance filters (METHODS.md 1.5-1.7). The stage
sends the requests; this module decides what the answers mean.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from ...logprobs import token_bytes
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
    # The output's character span in the reply text the parser read (None for instances made otherwise):
    # where its tokens are, for the output's own logprobs (`output_logprobs`).
    span: tuple[int, int] | None = field(default=None, compare=False)


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


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    """The span of `text[start:end].strip()` in `text`."""
    seg = text[start:end]
    lead = len(seg) - len(seg.lstrip())
    if lead == len(seg):
        return start, start
    return start + lead, start + len(seg.rstrip())


def _echo_end(text: str) -> int:
    m = _ECHO.match(text)
    return m.end() if m else 0


def _input_output(text: str, start: int, end: int) -> Instance:
    """The instance in `text[start:end]`: the input before the first 'Output:', the output after it (up to a
    second 'Output:' or 'Input:', where a second pair ran on)."""
    seg = text[start:end]
    m = _OUTPUT.search(seg)
    if m:
        nxt = _OUTPUT.search(seg, m.end())
        inp = seg[:m.start()].strip()
        out = _trim(text, start + m.end(), start + (nxt.start() if nxt else len(seg)))
    else:
        inp, out = "", _trim(text, start, end)
    if more := _INPUT_ANY.search(text, out[0], out[1]):
        out = _trim(text, out[0], more.start())
    return Instance(_INPUT_PREFIX.sub("", inp).strip(), text[out[0]:out[1]], out)


_NEW_TASK = re.compile(r"^\s*Task\s*:", re.IGNORECASE)


def parse_generation(text: str) -> list[Instance]:
    """Input-first answer: 'Example k' blocks, or one 'Output:' for tasks with no input.

    A chat model often answers a no-input task directly, without the 'Output:'
    label the demos show; that bare reply is the task's one output. A reply that
    opens with 'Task:' is a new task, not an answer, and yields nothing.
    Each instance's `span` is where its output is in `text`.
    """
    start, end = _trim(text, _echo_end(text), len(text))
    body = text[start:end]
    if _EXAMPLE.search(body):
        edges = [start] + [start + x for m in _EXAMPLE.finditer(body) for x in m.span()] + [end]
        blocks = [_trim(text, edges[i], edges[i + 1]) for i in range(0, len(edges), 2)]
        return [_input_output(text, a, b) for a, b in blocks if b > a]
    if _OUTPUT.search(body):
        return [_input_output(text, start, end)]
    if body and not _NEW_TASK.match(body):
        return [Instance("", body, (start, end))]
    return []


LABEL = "Class label:"


def parse_classification(text: str) -> list[Instance]:
    """Output-first answer: 'Class label: X' then the input on the following lines."""
    pos = _echo_end(text)
    if LABEL not in text[pos:]:
        return []
    heads = []
    while (pos := text.find(LABEL, pos)) >= 0:
        heads.append(pos)
        pos += len(LABEL)
    out = []
    for head, nxt in zip(heads, heads[1:] + [len(text)]):
        a, b = _trim(text, head + len(LABEL), nxt)
        nl = text.find("\n", a, b)
        label = _trim(text, a, nl if nl >= 0 else b)
        inp = text[nl + 1:b].strip() if nl >= 0 else ""
        out.append(Instance(inp, text[label[0]:label[1]], label))
    return out


def output_logprobs(reply: str, lp: list[list[Any]], span: tuple[int, int]) -> tuple[list[list[Any]], list[int]] | None:
    """The compact logprobs (`pipeline.logprobs.compact`) of the reply's tokens that cover its text `span`, and
    [lead, trail]: the bytes of those tokens before and after the span, so that
    `b"".join(tokens)[lead:len - trail]` is the span's text. None when the reply is not found in its tokens.

    The tokens' bytes concatenate to what the backend generated; `reply` is found at its start (or, where a
    reasoning trace or a stop text was cut from it, as its last occurrence). A token that straddles an edge
    of the span is kept whole: a BPE teacher glues the space after 'Output:' to the output's first word
    (' Paris') and may glue a newline to its last, so dropping it would lose a word's distribution;
    `lead` and `trail` say how many of its bytes lie outside. An empty token (no identity given) is kept
    only strictly inside the span, where leaving it out would shift every later position.
    """
    sizes = [len(token_bytes(p[0])) for p in lp]
    joined = b"".join(token_bytes(p[0]) for p in lp)
    body = reply.encode("utf-8")
    at = 0 if joined.startswith(body) else joined.rfind(body)
    if at < 0 or span[1] <= span[0]:
        return None
    lo = at + len(reply[:span[0]].encode("utf-8"))
    hi = at + len(reply[:span[1]].encode("utf-8"))
    kept, first, last, pos = [], None, 0, 0
    for p, n in zip(lp, sizes):
        if (pos < hi and pos + n > lo) if n else lo < pos < hi:
            kept.append(p)
            first = pos if first is None else first
            last = pos + n
        pos += n
    if first is None:
        return None
    return kept, [lo - first, last - hi]


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
