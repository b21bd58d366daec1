"""Alpaca mode: one call yields whole tasks (instruction, input, output) from 3 seed examples.

Pure functions: the prompt (`prompts/self_instruct/alpaca.txt`) and the
parser. The stage applies the same instruction filters (with Alpaca's extra
blacklist words) and the same ROUGE-L novelty rule (METHODS.md 1.9).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from ...prompts import load_template
from .config import SelfInstructConfig
from .seeds import SeedTask

TEMPLATE = "self_instruct/alpaca.txt"
NO_INPUT = "<noinput>"

_WS = re.compile(r"\s+")
_ITEM_START = re.compile(r"(?:^|\n)[ \t#]*\d+\s?\.\s?Instruction:")
_FIELD = re.compile(r"\d+\s?\.\s?(Instruction|Input|Output):")


def render_prompt(examples: list[SeedTask], cfg: SelfInstructConfig) -> str:
    blocks = []
    for i, task in enumerate(examples, 1):
        inp, out = task.instances[0]
        blocks.append(f"###\n{i}. Instruction: {_WS.sub(' ', task.instruction).strip().rstrip(':')}\n"
                      f"{i}. Input:\n{inp.strip() or NO_INPUT}\n{i}. Output:\n{out.strip()}")
    return load_template(TEMPLATE).render(num_tasks=cfg.alpaca.num_tasks, examples="\n".join(blocks),
                                          next_number=len(examples) + 1).rstrip()


def sample_examples(seeds: list[SeedTask], cfg: SelfInstructConfig, rng: random.Random) -> list[SeedTask]:
    return rng.sample(seeds, min(cfg.alpaca.num_seed_examples, len(seeds)))


def stop_sequences(cfg: SelfInstructConfig) -> tuple[str, ...]:
    n = cfg.alpaca.num_tasks
    return (f"\n{n}", f"{n}.")


@dataclass
class Triple:
    position: int
    instruction: str
    input: str
    output: str
    malformed: str = ""   # why the item could not be read ("" when fine)


def parse_reply(reply: str) -> list[Triple]:
    """Items of the reply in order. The prompt ends with an open 'N. Instruction:', so
    a reply that does not start with a numbered instruction continues that item."""
    text = reply.replace("###", "\n")
    if not _ITEM_START.match(text.lstrip("\n")):
        text = "0. Instruction:" + text
    starts = [m.start() for m in _ITEM_START.finditer(text)]
    out = []
    for k, (a, b) in enumerate(zip(starts, starts[1:] + [len(text)]), 1):
        parts = _FIELD.split(text[a:b].strip())
        # parts: ['', 'Instruction', text, 'Input', text, 'Output', text] for a full item
        fields: dict[str, str] = {}
        for name, value in zip(parts[1::2], parts[2::2]):
            fields.setdefault(name, value.strip())
        if "Instruction" not in fields or "Output" not in fields:
            missing = [f for f in ("Instruction", "Output") if f not in fields]
            out.append(Triple(k, _WS.sub(" ", fields.get("Instruction", "")).strip(), "", "",
                              f"no {' or '.join(missing)} field"))
            continue
        if not fields["Output"].strip():
            out.append(Triple(k, _WS.sub(" ", fields["Instruction"]).strip(), "", "", "empty Output field"))
            continue
        inp = fields.get("Input", "")
        inp = "" if inp.strip().lower() == NO_INPUT else inp
        out.append(Triple(k, _WS.sub(" ", fields["Instruction"]).strip(), inp.strip(), fields["Output"]))
    return out
