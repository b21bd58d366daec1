"""Elimination evolving (WizardLM section 3.3) plus the pipeline's own sanity checks.

Every check returns None (keep) or a `Drop(reason, detail)`; the stage turns a
drop into a row of `rejected/` with drop_stage "evol_instruct". The paper's
four rules:

  (a) no information gain: identical text (automatic), or the equality judge
      answers Equal -> `identical_to_parent`, `judged_equal`
  (b) the answer says "sorry" and is under 80 words, unless the instruction
      is itself about apologies -> `answer_sorry`
  (c) the answer is only punctuation and stop words -> `answer_degenerate`
  (d) the evolution copies the evolving prompt's meta terms -> `prompt_leakage`

and ours: `evolve_error`, `evolution_truncated`, `empty_evolution`,
`too_long`, `judge_error`, `judge_unclear` (only when configured to drop),
`answer_error`, `answer_empty`, `answer_truncated`, `over_max_rows`.
"""

from __future__ import annotations

import re
from functools import lru_cache

from ...assets import data_dir
from ...records import Drop, normalize_text
from ...teacher.base import Completion
from .config import EvolConfig

# --- the evolution itself ---------------------------------------------------

def check_evolution(parent_prompt: str, evolved: str, comp: Completion, op: str,
                    cfg: EvolConfig) -> Drop | None:
    """Checks that need only the evolve call's completion (no more teacher calls)."""
    if not comp.ok:
        err = comp.error
        return Drop("evolve_error", f"{err.kind}: {err.message}" if err else "no text")
    if comp.truncated:
        return Drop("evolution_truncated", f"cut off at evolve_max_tokens={cfg.evolve_max_tokens}")
    if not evolved.strip():
        return Drop("empty_evolution", "the reply held no rewritten instruction")
    leak = leaked_term(evolved, cfg.meta_terms)
    if leak is not None:
        return Drop("prompt_leakage", f"contains meta term {leak!r}")
    parent_words = len(parent_prompt.split())
    words = len(evolved.split())
    ratio = cfg.max_length_ratio[op]
    allowed = int(ratio * parent_words) + cfg.length_slack_words
    if words > allowed:
        return Drop("too_long", f"{words} words > {allowed} allowed for {op} "
                                f"({ratio:g} x {parent_words} + {cfg.length_slack_words})")
    if normalize_text(evolved) == normalize_text(parent_prompt):
        return Drop("identical_to_parent", "the evolution is the parent's text")
    return None


def leaked_term(text: str, terms: list[str]) -> str | None:
    low = text.lower()
    for term in terms:
        if term in low:
            return term
    return None


# --- rule (a): the equality judge -------------------------------------------

# "Not Equal" contains "Equal": the negative forms are checked first, and a
# reply with both ("Equal? No, Not Equal") counts as not equal.
_NOT_EQUAL = re.compile(r"\bnot[\s_-]*equal\b|\bunequal\b|\binequal\b", re.IGNORECASE)
_EQUAL = re.compile(r"\bequal\b", re.IGNORECASE)


def parse_judge(reply: str | None) -> str:
    """'not_equal', 'equal' or 'unclear'."""
    if not reply:
        return "unclear"
    if _NOT_EQUAL.search(reply):
        return "not_equal"
    if _EQUAL.search(reply):
        return "equal"
    return "unclear"


def check_judge(comp: Completion, cfg: EvolConfig) -> tuple[str, Drop | None]:
    """(verdict, drop): Equal fails the evolution (no information gain)."""
    if not comp.ok:
        err = comp.error
        return "error", Drop("judge_error", f"{err.kind}: {err.message}" if err else "no text")
    verdict = parse_judge(comp.text)
    if verdict == "equal":
        return verdict, Drop("judged_equal", f"judge replied {_short(comp.text)!r}")
    if verdict == "unclear" and cfg.judge_unclear == "drop":
        return verdict, Drop("judge_unclear", f"judge replied {_short(comp.text)!r}")
    return verdict, None


# --- the answer: rules (b) and (c) ------------------------------------------

def check_answer(instruction: str, comp: Completion, cfg: EvolConfig, max_tokens: int | None = None) -> Drop | None:
    """`max_tokens`: the budget the answer was asked with (after any retry), named in a truncation drop."""
    if not comp.ok:
        err = comp.error
        return Drop("answer_error", f"{err.kind}: {err.message}" if err else "no text")
    text = comp.text or ""
    if not text.strip():
        return Drop("answer_empty", "the teacher's answer is empty")
    if comp.truncated and cfg.drop_truncated_answers:
        return Drop("answer_truncated", f"cut off at max_tokens={max_tokens or cfg.answer_max_tokens}"
                                        + (" after one retry" if max_tokens and max_tokens > cfg.answer_max_tokens else ""))
    sorry = check_sorry(instruction, text, cfg)
    if sorry is not None:
        return sorry
    if is_degenerate(text):
        return Drop("answer_degenerate", f"only punctuation and stop words: {_short(text)!r}")
    return None


def check_sorry(instruction: str, answer: str, cfg: EvolConfig) -> Drop | None:
    """Rule (b): a short answer containing "sorry" means the teacher could not answer."""
    if "sorry" not in answer.lower():
        return None
    low_instr = instruction.lower()
    if any(t in low_instr for t in cfg.apology_terms):
        return None  # the task is about apologies: "sorry" is content, not refusal
    words = len(answer.split())
    if words < cfg.sorry_max_words:
        return Drop("answer_sorry", f"contains 'sorry' and has {words} words (< {cfg.sorry_max_words})")
    return None


_TOKEN = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")


@lru_cache(maxsize=1)
def stop_words() -> frozenset[str]:
    path = data_dir() / "stopwords_en.txt"
    words = (line.strip().lower() for line in path.read_text(encoding="utf-8").splitlines())
    return frozenset(w for w in words if w and not w.startswith("#"))


def is_degenerate(text: str) -> bool:
    """Rule (c): nothing is left once punctuation and stop words are removed."""
    sw = stop_words()
    for tok in _TOKEN.findall(text.lower().replace("\u2019", "'")):
        if tok not in sw:
            return False
    return True


def _short(text: str | None, n: int = 80) -> str:
    t = " ".join((text or "").split())
    return t if len(t) <= n else t[: n - 1] + "\u2026"
