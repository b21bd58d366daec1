"""The evolving operations: their templates, the seeded choice, and reading the teacher's rewrite.

Each operation is one template under `prompts/evol/<operation>.txt` with a
`{{ prompt }}` slot (complicate-input also has `{{ data_format }}`). The
equality judge is `prompts/evol/equality_judge.txt` with `{{ first }}` and
`{{ second }}`. The choice of operation (and of data format) for one
evolution comes from `rng_for(run seed, record id, "evol_op:round=N")`, so a
rerun makes the same choices and two rounds of one record make independent ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ...prompts import Template, load_template
from ...seeding import rng_for
from .config import EvolConfig

JUDGE_TEMPLATE = "evol/equality_judge.txt"


def template_name(op: str) -> str:
    return f"evol/{op}.txt"


def prompt_text(row: dict[str, Any]) -> str:
    """The instruction as one prompt: instruction, then its input (as the chat user turn has it)."""
    instruction = (row.get("instruction") or "").strip()
    inp = (row.get("input") or "").strip()
    return f"{instruction}\n\n{inp}" if inp else instruction


@dataclass(frozen=True)
class Choice:
    op: str
    data_format: str | None = None


class Operations:
    """The enabled operations with their loaded templates and weights."""

    def __init__(self, cfg: EvolConfig):
        self.cfg = cfg
        self.names = cfg.enabled
        self.weights = [cfg.operations[op] for op in self.names]
        self.templates: dict[str, Template] = {op: load_template(template_name(op)) for op in self.names}
        self.judge: Template = load_template(JUDGE_TEMPLATE)

    def hashes(self) -> dict[str, str]:
        out = {t.name: t.hash for t in self.templates.values()}
        out[self.judge.name] = self.judge.hash
        return out

    def choose(self, run_seed: int, record_id: str, round_no: int) -> Choice:
        rng = rng_for(run_seed, record_id, f"evol_op:round={round_no}")
        op = rng.choices(self.names, weights=self.weights, k=1)[0]
        fmt = rng.choice(self.cfg.data_formats) if op == "complicate_input" else None
        return Choice(op, fmt)

    def render(self, choice: Choice, prompt: str) -> str:
        values: dict[str, Any] = {"prompt": prompt}
        if choice.data_format is not None:
            values["data_format"] = choice.data_format
        return self.templates[choice.op].render(**values)

    def render_judge(self, first: str, second: str) -> str:
        return self.judge.render(first=first, second=second)


# The frame ends with an open "#Rewritten Prompt#:" / "#Created Prompt#:" slot.
# A model that echoes the frame puts its rewrite after the last such marker
# (distilabel's parser takes the text after the last "Prompt#:" the same way;
# small models often drop the leading "#", so it is optional here).
_SLOT = re.compile(r"#?\s*\b(?:rewritten|created)\s+prompt\s*#\s*:", re.IGNORECASE)
_QUOTES = "\"'\u201c\u201d\u2018\u2019`"


def parse_evolution(reply: str | None) -> str:
    """The rewritten instruction from the teacher's reply ('' when there is none)."""
    if not reply:
        return ""
    text = reply
    marks = list(_SLOT.finditer(text))
    if marks:
        text = text[marks[-1].end():]
    text = text.strip()
    # A rewrite wrapped in one pair of quotes is the rewrite.
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    return text

