"""The final answer of a trace, and of a reference, normalised so that two can be compared: the documented rules.

Reads strings (a teacher's answer text, a row's reference, the question for its options); returns normalised
answers. Writes nothing. The rules, in order (README "Verified traces" repeats them):

1. The span: the text after the last `\\boxed{...}`'s braces' content, else after the last `####` (GSM8K), else
   after the last "answer:" / "answer is" (case-insensitive, "final answer" too), else the last non-empty line.
2. The kind of answer, from the reference (or, without one, from the question and the spans):
   - choice: the reference is one letter A-J (alone, or as "(B)", "B)", "B.", "B: text"); or, without a
     reference, the question lists options as "(A) ...", "A) ..." or "A. ..." lines;
   - number: the reference holds a number (digits with an optional sign, thousands commas, decimals, a
     fraction a/b; "$" and "%" ignored) and is at most 12 words;
   - text: any other reference of at most `max_text_words` words (8);
   - else the row cannot be checked (`None`).
3. Normalising a span:
   - number: the part after the last "=" if there is one; then its first number if it starts with one,
     else its last number; as a canonical decimal string (1,234 -> 1234; 3/4 -> 0.75; 2.50 -> 2.5;
     12.0 -> 12);
   - choice: a letter in parentheses "(B)", else a leading letter "B", "B)", "B.", "B:", else "option B" /
     "choice B"; else the option whose text the span equals (normalised as text); letters are upper-cased;
   - text: NFKC, lower case, punctuation dropped, the articles a/an/the dropped, spaces collapsed (SQuAD's
     normalisation). A text answer agrees with a reference when they are equal, or when the reference's
     words appear together, as whole words, in a span of at most `max_text_words` + 8 words.
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation

KINDS = ("number", "choice", "text")
MAX_TEXT_WORDS = 8

_BOXED = re.compile(r"\\boxed\s*\{([^{}]*)\}")
_HASHES = re.compile(r"####\s*")
_ANSWER = re.compile(r"(?:final\s+answer|answer)\s*(?:is|:|：)\s*", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\w.])[-−]?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s?/\s?\d+)?(?![\d])")
_PAREN_LETTER = re.compile(r"\(([A-Ja-j])\)")
_LEAD_LETTER = re.compile(r"^\W*([A-J])(?:[).:]|\s|$)")
_NAMED_LETTER = re.compile(r"\b(?:option|choice)\s+\(?([A-Ja-j])\b", re.IGNORECASE)
_OPTION_LINE = re.compile(r"^\s*\(?([A-J])[).:]\s+(.+?)\s*$", re.MULTILINE)
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_PUNCT = re.compile(r"[^\w\s]")


def final_span(text: str) -> str:
    """Where the trace states its result (rule 1); '' for an empty text."""
    text = (text or "").strip()
    boxed = list(_BOXED.finditer(text))
    if boxed:
        return boxed[-1].group(1).strip()
    for mark in (_HASHES, _ANSWER):
        found = list(mark.finditer(text))
        if found:
            rest = text[found[-1].end():].strip()
            if rest:
                return rest.splitlines()[0].strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def normalize_text(text: str) -> str:
    text = unicodedata.normalize("NFKC", text or "").lower()
    return " ".join(_ARTICLES.sub(" ", _PUNCT.sub(" ", text)).split())


def _canonical(number: str) -> str | None:
    s = number.replace("−", "-").replace("$", "").replace(",", "").replace(" ", "")
    try:
        if "/" in s:
            num, den = s.split("/")
            value = Decimal(num) / Decimal(den)
        else:
            value = Decimal(s)
    except (InvalidOperation, ZeroDivisionError):
        return None
    if value.as_tuple().exponent < -6:  # a fraction's expansion: six decimals decide
        value = value.quantize(Decimal("1e-6"))
    out = format(value.normalize(), "f")
    return "0" if out == "-0" else out


def normalize_number(span: str) -> str | None:
    """The span's number as a canonical decimal string (rule 3, number); None when it holds none."""
    s = (span.rsplit("=", 1)[1] if "=" in span else span).strip()
    found = list(_NUMBER.finditer(s))
    if not found:
        return None
    return _canonical((found[0] if found[0].start() == 0 else found[-1]).group(0))


def options(question: str) -> dict[str, str]:
    """Letter -> normalised option text, from "(A) ..." / "A) ..." / "A. ..." lines (at least two)."""
    found = {m.group(1): normalize_text(m.group(2)) for m in _OPTION_LINE.finditer(question or "")}
    return found if len(found) >= 2 else {}


def normalize_choice(span: str, opts: dict[str, str] | None = None) -> str | None:
    """The span's option letter (rule 3, choice); None when it names none."""
    for pattern in (_PAREN_LETTER, _LEAD_LETTER, _NAMED_LETTER):
        m = pattern.search(span)
        if m:
            return m.group(1).upper()
    norm = normalize_text(span)
    for letter, text in (opts or {}).items():
        if norm and norm == text:
            return letter
    return None


def answer_kind(reference: str | None, question: str = "", max_text_words: int = MAX_TEXT_WORDS) -> str | None:
    """The kind of answer a row asks for (rule 2); None for a reference too long to check. Without a
    reference: choice when the question lists options, else None (the spans decide, `spans_kind`)."""
    ref = (reference or "").strip()
    if not ref:
        return "choice" if options(question) else None
    if re.fullmatch(r"\(?[A-J]\)?(?:[.):]\s*.*)?", ref, re.DOTALL) and (len(ref) == 1 or options(question)
                                                                      or re.match(r"\(?[A-J][).:]", ref)):
        return "choice"
    if _NUMBER.search(ref) and len(ref.split()) <= 12:
        return "number"
    if len(normalize_text(ref).split()) <= max_text_words and normalize_text(ref):
        return "text"
    return None


def spans_kind(spans: list[str]) -> str:
    """Without a reference or options: number when most spans hold a number, else text."""
    numbered = sum(1 for s in spans if normalize_number(s) is not None)
    return "number" if spans and numbered * 2 > len(spans) else "text"


def normalize(span: str, kind: str, question: str = "") -> str | None:
    """A span as the comparable answer of `kind`; None when it states no answer of that kind."""
    if kind == "number":
        return normalize_number(span)
    if kind == "choice":
        return normalize_choice(span, options(question))
    return normalize_text(span) or None


def reference_answer(reference: str, kind: str, question: str = "") -> str | None:
    """A reference normalised like a span (its span is itself: a reference states only the answer)."""
    return normalize(reference.strip(), kind, question)


def agrees(answer: str | None, target: str | None, kind: str, max_text_words: int = MAX_TEXT_WORDS) -> bool:
    """Whether a normalised answer agrees with the normalised target (text: the containment rule)."""
    if answer is None or target is None:
        return False
    if answer == target:
        return True
    if kind != "text":
        return False
    words = answer.split()
    return (len(words) <= max_text_words + 8
            and re.search(r"(?<!\w)" + re.escape(target) + r"(?!\w)", answer) is not None)
