"""Task-kind detection: which kind of task a row is, so the Orca stage can pick its
allowed system messages (Orca 1) or its strategy (Orca 2).

Rule-based by default (`detect_kind`): ordered regular-expression rules over
the instruction and input, first match wins. A row that already carries a
known `task_kind` (declared upstream, e.g. by an import) keeps it. Optionally
the teacher is asked (`teacher_prompt` / `parse_teacher_kind`); an answer that
names no known kind falls back to the rules.
"""

from __future__ import annotations

import re
from typing import Any

# The kinds the stage knows, roughly from the most to the least specific.
# Each kind is mapped (in the catalogs) to the FLAN-v2 sub-collection its tasks
# mostly come from, which decides its default system messages.
TASK_KINDS: tuple[str, ...] = (
    "multiple_choice", "classification", "math", "reasoning", "coding", "translation",
    "extraction", "summarization", "rewriting", "closed_qa", "open_qa",
    "brainstorming", "creative_writing", "open_generation",
)

# Names other datasets use for the same kinds (Dolly categories, loose spellings).
ALIASES: dict[str, str] = {
    "general_qa": "open_qa", "qa": "open_qa", "question_answering": "open_qa",
    "information_extraction": "extraction", "mcq": "multiple_choice", "multiple choice": "multiple_choice",
    "arithmetic": "math", "code": "coding", "programming": "coding", "summarisation": "summarization",
    "summary": "summarization", "rewrite": "rewriting", "paraphrase": "rewriting",
    "generation": "open_generation", "creative": "creative_writing", "open_ended": "open_generation",
}


def canonical_kind(name: str | None) -> str | None:
    """A known kind for `name` (itself, or through an alias), else None."""
    if not name:
        return None
    key = re.sub(r"[\s\-]+", "_", name.strip().lower())
    if key in TASK_KINDS:
        return key
    return ALIASES.get(key) or ALIASES.get(name.strip().lower())


_I = re.IGNORECASE | re.MULTILINE

# Option labels "(A)" anywhere, or "A)" / "A." / "A:" at a line start. Digits are
# not labels: numbered lists of questions or steps are far more common than
# numbered options.
_OPTION = re.compile(r"\(([A-Ea-e])\)\s*\S|^\s*([A-Ea-e])[\).:]\s+\S", re.MULTILINE)
_OPTIONS_WORD = re.compile(r"\b(options|choices|answer choices)\s*:|\bchoose (the|one|from)\b|\bwhich of the following options\b", _I)

# (kind, pattern over "instruction\ninput"), tried in order after multiple choice.
_RULES: list[tuple[str, re.Pattern[str]]] = [
    ("translation", re.compile(
        r"\btranslat(e|ion|ing)\b|\bhow (do|would) you say\b|\bin (french|spanish|german|italian|chinese|japanese"
        r"|korean|russian|portuguese|arabic|hindi|dutch)\s*[?:.]?\s*$", _I)),
    ("coding", re.compile(
        r"```|^\s*(def|class)\s+\w+\s*[(:]|\bfunction\s+\w*\s*\(|\b(python|javascript|typescript|java|c\+\+|c#|rust|golang"
        r"|sql|bash|regex|html|css)\b.*\b(code|function|script|query|program|snippet|implement)\b|"
        r"\b(write|implement|debug|fix) (a |an |the |this )?(\w+ ){0,2}(function|program|script|class|sql query|regex|code)\b",
        _I)),
    ("reasoning", re.compile(
        r"\b(riddle|puzzle|logic(al)? (problem|question)|deduce|infer from|which follows logically)\b", _I)),
    ("math", re.compile(
        r"\d\s*[+*/x×÷^=]\s*\d|(?<![\d-])\d{1,3}\s+-\s+\d{1,3}(?![\d-])|\b(plus|minus|times|divided by)\s+\d|\b(calculate|compute|solve( for)?|equation|integral|derivative|arithmetic"
        r"|how (much|many)\b.*\b\d|percent(age)?|average of|sum of|product of|square root|probability)\b", _I)),
    ("summarization", re.compile(
        r"\b(summari[sz]e|summary|summari[sz]ing|tl;?dr|in (one|two|three|a few) sentences|main (idea|points)|key points|gist)\b", _I)),
    ("rewriting", re.compile(
        r"\b(rewrite|re-write|paraphrase|rephrase|reword|proofread|correct (the )?(grammar|spelling)|edit (this|the following)"
        r"|make (this|it|the following) (more |less )?\w+er\b|simplify (this|the following) (text|sentence|paragraph))", _I)),
    ("extraction", re.compile(
        r"\b(extract|pull out|list (all|every|each)? ?(the )?\w+ (mentioned|named|listed)|comma[- ]separated"
        r"|from (the|this) (text|passage|paragraph|article|reference)|(mentioned|listed|named) in (the|this) "
        r"(text|passage|paragraph))", _I)),
    ("classification", re.compile(
        r"\b(classify|classif(y|ied|ication)|categori[sz]e|categor(y|ies)|sentiment|label (each|the|these)"
        r"|identify which|which of (these|the following|them) (is|are)|tell me (whether|if|which)\b.*\bor\b"
        r"|is (it|this|that|each|these) (a|an)?\s*\w+ or\b|(are|is) (these|the following)\b.*\bor\b"
        r"|\beither\b.*\bor\b|\bpositive or negative\b|\btrue or false\b|tell me (whether|which|if)\b"
        r"|\bwhich (ones?|of these|is an?|is the)\b[^?:]*\bor\b)", _I)),
    # A question followed by a comma-separated list of items to sort.
    ("classification", re.compile(r"^[^\n,]{8,}[:?]\s*[^,\n]+(,[^,\n]+){2,}\.?\s*$", re.IGNORECASE)),
]

_CREATIVE = re.compile(
    r"\b(write|compose|create|draft|come up with)\b.{0,40}\b(poem|story|haiku|essay|letter|scene|song|lyrics|limerick"
    r"|tweet|speech|blog|dialog(ue)?|review|script|email|e-mail|joke|slogan|ad|advert\w*|itinerary|toast|message|post)\b"
    r"|\bimagine\b|\bpretend\b|\bwrite (a|an|me)\b", _I)
_BRAINSTORM = re.compile(
    r"\b(brainstorm|suggest|ideas?|tips|ways to|list (some|of|\d+|a few|five|three|ten)|give me (a list|some|\d+|a few"
    r"|five|three|ten|ideas)|what are (some|good|the best|common)|name (some|a few|\d+|five|three|four|ten)|top \d+"
    r"|think (of|up)|recommend)\b", _I)
_QUESTION = re.compile(r"\?\s*$|^\s*(who|what|when|where|why|which|how|is|are|was|were|do|does|did|can|could|should"
                       r"|will|would|has|have|tell me about|explain|describe|define)\b", _I)


def _is_multiple_choice(text: str) -> bool:
    labels = {(m.group(1) or m.group(2)).upper() for m in _OPTION.finditer(text)}
    if {"A", "B"} <= labels:
        return True
    return bool(_OPTIONS_WORD.search(text))


def detect_kind(instruction: str, input: str = "", is_classification: bool | None = None) -> str:
    """The rule-based kind of one task (always one of TASK_KINDS)."""
    text = f"{instruction or ''}\n{input or ''}"
    if _is_multiple_choice(text):
        return "multiple_choice"
    # Rules look at the instruction first: the input is material to work on and
    # would otherwise trigger rules by its content (a passage with numbers is not math).
    for kind, pattern in _RULES:
        if pattern.search(instruction or ""):
            return kind
    if is_classification:
        return "classification"
    has_input = bool((input or "").strip())
    if has_input:
        return "closed_qa"
    if _CREATIVE.search(instruction or ""):
        return "creative_writing"
    if _BRAINSTORM.search(instruction or ""):
        return "brainstorming"
    if _QUESTION.search(instruction or ""):
        return "open_qa"
    return "open_generation"


def row_kind(row: dict[str, Any], trust_declared: bool = True) -> tuple[str, str]:
    """(kind, source) for one row: a declared known kind, else the rules."""
    if trust_declared:
        declared = canonical_kind(row.get("task_kind"))
        if declared:
            return declared, "declared"
    return detect_kind(row.get("instruction") or "", row.get("input") or "",
                       row.get("is_classification")), "rules"


def parse_teacher_kind(text: str | None) -> str | None:
    """The first known kind the teacher's reply names (underscores, spaces or hyphens)."""
    if not text:
        return None
    low = text.lower()
    best: tuple[int, str] | None = None
    for name in list(TASK_KINDS) + list(ALIASES):
        for variant in {name, name.replace("_", " "), name.replace("_", "-")}:
            m = re.search(r"(?<![a-z])" + re.escape(variant) + r"(?![a-z])", low)
            if m and (best is None or m.start() < best[0]):
                best = (m.start(), canonical_kind(name) or name)
    return best[1] if best else None
