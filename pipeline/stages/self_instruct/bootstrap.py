"""Instruction bootstrapping: the in-context prompt, parsing the numbered list, the paper's filters.

Pure functions over text (no teacher, no files), so every rule has a unit test
on recorded completions. The ROUGE-L novelty filter, which needs the pool,
lives in `rouge.py` and runs after these.
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass

from ...prompts import load_template
from ...records import Drop
from .config import SelfInstructConfig

TEMPLATE = "self_instruct/bootstrap.txt"

_WS = re.compile(r"\s+")
# The paper splits the continuation on "\n<number>. "; leading blanks are
# tolerated because chat models indent lists.
_ITEM_SPLIT = re.compile(r"\n[ \t]*\d+\s?\. ")
_LEADING_NUMBER = re.compile(r"^\s*\d+\s?\.(?: |\n|$)")


def clean_for_prompt(instruction: str) -> str:
    """In-context form: whitespace collapsed, a trailing colon removed (as the paper)."""
    return _WS.sub(" ", instruction).strip().rstrip(":")


def sample_in_context(seeds: list[str], machine: list[str], cfg: SelfInstructConfig,
                      rng: random.Random) -> list[str]:
    """6 seed + up to 2 machine instructions (fewer machine ones early on), shuffled."""
    n_machine = min(cfg.num_machine_instructions, len(machine))
    chosen = rng.sample(machine, n_machine) if n_machine else []
    n_seed = min(cfg.num_prompt_instructions - n_machine, len(seeds))
    chosen += rng.sample(seeds, n_seed)
    rng.shuffle(chosen)
    return chosen


def render_prompt(tasks: list[str], cfg: SelfInstructConfig) -> str:
    listing = "\n".join(f"{i}. {clean_for_prompt(t)}" for i, t in enumerate(tasks, 1))
    return load_template(TEMPLATE).render(tasks=listing, next_number=len(tasks) + 1,
                                          last_item=cfg.last_item).rstrip()


def stop_sequences(cfg: SelfInstructConfig) -> tuple[str, ...]:
    """The paper's stops. Its "\n\n" fits this prompt, a single-spaced list the reply continues (and which
    asks for nothing before or after it), and it ends a chat model's closing remarks."""
    n = cfg.last_item + 1
    blank = ("\n\n",) if cfg.stop_at_blank_line else ()
    return blank + (f"\n{n}", f"{n}.", f"{n} .")


@dataclass
class RawItem:
    position: int        # 1-based position in the reply: item number = num_in_context + position; 0: a lead-in
    text: str            # after whitespace collapse and capitalisation
    preamble: bool = False


# A chat model's lead-in: "Sure! Here are some new tasks:", "Here are 8 more instructions:",
# "1. The following tasks are different from the ones listed:". Each pattern is one a task in the
# paper's style does not take: a courtesy word with its punctuation, "here/below" announcing more
# tasks, or a line ending in a colon that talks about tasks (the prompt lists no trailing colons).
_COURTESY = re.compile(r"^(?:sure|certainly|of course|absolutely|okay|ok|alright|great|no problem)\s*[!,.:]",
                       re.IGNORECASE)
_ANNOUNCE = re.compile(r"^(?:here|below)\b.*\b(?:tasks?|instructions?|items?|more|additional|new|further|next)\b",
                       re.IGNORECASE)
_ABOUT_TASKS = re.compile(r"\b(?:tasks|instructions)\b", re.IGNORECASE)


def is_lead_in(text: str) -> bool:
    """True for a chat reply's opening line that announces the list rather than being a task."""
    t = text.strip()
    return bool(_COURTESY.match(t) or _ANNOUNCE.match(t) or (t.endswith(":") and _ABOUT_TASKS.search(t)))


def _capitalize(text: str, how: str) -> str:
    if how == "paper":
        return text.capitalize()   # the original code's choice: lowercases all but the first letter
    if how == "first_letter":
        return text[:1].upper() + text[1:]
    return text


def parse_items(reply: str, cfg: SelfInstructConfig) -> list[RawItem]:
    """Split a reply into candidate instructions, in order.

    The prompt ends with an open item, so a completion model writes item 9's
    text straight away; a chat model usually repeats a number first ("9. ..."
    or, renumbering, "1. ..."). Either way the k-th chunk is taken as item
    8 + k, by position like the paper's split. A chat lead-in ("Here are more
    tasks:") is no task: it comes back first, flagged, at position 0, and the
    items after it are counted from 1. It is either an unnumbered first chunk
    that ends with a colon and is followed by items, or a first chunk that
    `is_lead_in` (also the whole reply, when the blank-line stop cut it there).
    """
    text = reply.strip("\n")
    m = _LEADING_NUMBER.match(text)
    if m:
        text = text[m.end():]
    chunks = [_WS.sub(" ", chunk).strip() for chunk in _ITEM_SPLIT.split(text)]
    lead = (not m and len(chunks) > 1 and chunks[0].endswith(":")) or is_lead_in(chunks[0])
    items = [RawItem(0, _capitalize(chunks.pop(0), cfg.capitalize), True)] if lead else []
    items += [RawItem(k, _capitalize(chunk, cfg.capitalize)) for k, chunk in enumerate(chunks, 1)]
    return items


def _keyword_re(words: list[str]) -> re.Pattern | None:
    if not words:
        return None
    return re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)


class InstructionFilter:
    """The paper's instruction filters, in the paper's order; `check` -> None or (reason, detail)."""

    def __init__(self, cfg: SelfInstructConfig):
        self.cfg = cfg
        self.keywords = _keyword_re(cfg.keywords)

    def check(self, inst: str) -> Drop | None:
        cfg = self.cfg
        if inst == "":
            return Drop("empty", "nothing left after stripping")
        words = len(inst.split())
        if words <= cfg.min_words:
            return Drop("too_few_words", f"{words} words (must be more than {cfg.min_words})")
        if words > cfg.max_words:
            return Drop("too_many_words", f"{words} words (at most {cfg.max_words})")
        if self.keywords is not None:
            hit = self.keywords.search(inst)
            if hit:
                return Drop("blacklisted_keyword", f"contains '{hit.group(1)}' (a text-only model cannot do it)")
        # The paper tests startswith after capitalize(), i.e. ignoring case.
        if inst.lower().startswith("write a program"):
            return Drop("write_a_program", "starts with 'Write a program'")
        if inst[0] in string.punctuation:
            return Drop("starts_with_punctuation", f"starts with {inst[0]!r}")
        if not inst[0].isascii():
            return Drop("starts_with_non_ascii", f"starts with {inst[0]!r}")
        return None
