"""The generation step: the teacher writes new instructions after the hard rows (same domain, task type,
length and difficulty) and, for a share of them, after the easy rows (same domain, a rarer topic), as
Lion keeps both.

Reads the judged rows of a round; writes nothing. `plan` picks the parents: `per_hard` requests per hard
row, and `easy_ratio` times as many from easy rows drawn with the round's seed. `check` is Lion's
post-processing, as verdicts with a reason: a cut-off reply, three words or fewer, a reply that opens
with punctuation or a non-ASCII character, one that talks about the prompt itself, and (ours, besides
Lion's ROUGE-L) one whose id is already in the shard. A new row has `origin = "hard:<parent id>"`, the
parent's lineage, no answer (orca answers it) and meta.hard = {"generated_as", "generated_in_round", "parent_gap"}.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from random import Random
from typing import Any

from ...prompts import load_template
from ...records import Drop, get_meta, new_row, set_meta
from ...teacher.base import ChatRequest, Completion, Sampling

TEMPLATES = {"hard": "hard/create_hard.txt", "easy": "hard/create_easy.txt"}
MIN_TOKENS = 64
_PROMPT_WORDS = ("example task", "new task", "given task", "new example", "===")  # Lion drops "instruction"


@dataclass(frozen=True)
class Ask:
    parent: dict[str, Any]
    kind: str               # "hard" or "easy": which template, and meta.hard.generated_as
    index: int              # the n-th request after this parent in this round (the request's sample_index)


def plan(hard: list[dict[str, Any]], easy: list[dict[str, Any]], per_hard: int, easy_ratio: float,
         rng: Random) -> list[Ask]:
    """What to ask: `per_hard` per hard row, then round(easy_ratio x that) parents drawn from `easy`."""
    asks = [Ask(row, "hard", i) for row in hard for i in range(per_hard)]
    n_easy = round(len(asks) * easy_ratio) if easy else 0
    drawn: dict[str, int] = {}
    for _ in range(n_easy):
        row = rng.choice(easy)
        drawn[row["id"]] = drawn.get(row["id"], 0) + 1
        asks.append(Ask(row, "easy", drawn[row["id"]] - 1))
    return asks


def request(ask: Ask, temperature: float, words_factor: int, round_no: int) -> ChatRequest:
    text = load_template(TEMPLATES[ask.kind]).render(instruction=user_text(ask.parent))
    budget = max(MIN_TOKENS, words_factor * len(user_text(ask.parent).split()))
    return ChatRequest(messages=({"role": "user", "content": text},),
                       sampling=Sampling(temperature=temperature, top_p=1.0, max_tokens=budget),
                       record_id=ask.parent["id"], purpose=f"hard:generate:{ask.kind}:r{round_no}",
                       sample_index=ask.index)


def user_text(row: dict[str, Any]) -> str:
    return row["instruction"] if not row.get("input") else f"{row['instruction']}\n\n{row['input']}"


def clean(text: str | None) -> str:
    out = (text or "").strip()
    if len(out) >= 2 and out[0] == out[-1] and out[0] in "\"'":
        out = out[1:-1].strip()
    return out


def check(text: str, finish_reason: str | None) -> Drop | None:
    """Lion's filters on one generated instruction (after `clean`)."""
    if finish_reason == "length":
        return Drop("truncated", "the reply hit its token budget")
    if len(text.split()) <= 3:
        return Drop("too_short", f"{len(text.split())} words")
    if text[0] in string.punctuation:
        return Drop("starts_with_punctuation", text[:20])
    if not text[0].isascii():
        return Drop("non_ascii_start", text[:20])
    low = text.lower()
    if any(w in low for w in _PROMPT_WORDS):
        return Drop("mentions_prompt", next(w for w in _PROMPT_WORDS if w in low))
    return None


def new_instruction(ask: Ask, text: str, comp: Completion, req: ChatRequest, round_no: int,
                    teacher: Any, run_id: str) -> dict[str, Any]:
    template = load_template(TEMPLATES[ask.kind])
    row = new_row(text, "", "", origin=f"hard:{ask.parent['id']}", parent=ask.parent, run_id=run_id,
                  teacher_backend=teacher.backend, teacher_model=comp.model or teacher.model,
                  sampling=req.sampling.to_json(), prompt_template=template.name,
                  prompt_hash=template.hash, finish_reason=comp.finish_reason,
                  prompt_tokens=comp.usage.prompt_tokens, completion_tokens=comp.usage.completion_tokens)
    row["output"] = None  # no answer yet: orca (or the next round) answers it
    set_meta(row, "hard", {"generated_as": ask.kind, "generated_in_round": round_no,
                           "parent_gap": (get_meta(ask.parent, "hard", {}) or {}).get("student_gap")})
    return row
