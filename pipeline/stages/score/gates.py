"""Hygiene gates: deterministic keep-or-drop rules encoding LIMA's curation (METHODS.md 4.1-4.2).

Each gate is `gate(row, cfg) -> None | (reason, detail)`: None keeps the row,
a tuple drops it with a machine-readable reason and a human-readable detail
(the matched text). Gates look at the instruction, input and output of one
row and nothing else, so the same row always gets the same verdict.

Patterns are the team's own lists. They aim at boilerplate, not at every
mention of a word: "I cannot stress enough" is not a refusal, "the image
processing library" is not a reference to an attachment.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from ...harmful import harmful_request
from ...records import Drop, normalize_text
from . import language
from .config import ScoreConfig

Verdict = Drop | None
_I = re.IGNORECASE


def _snippet(text: str, m: re.Match | None = None, width: int = 80) -> str:
    if m is None:
        return text[:width]
    a = max(0, m.start() - 20)
    return text[a:a + width].replace("\n", " ")


def _prompt(row: dict[str, Any]) -> str:
    return f"{row.get('instruction') or ''}\n{row.get('input') or ''}"


def gate_empty(row: dict[str, Any], cfg: ScoreConfig) -> Verdict:
    out = row.get("output") or ""
    if not out.strip():
        return Drop("empty_output", "the answer is empty")
    return None


def _bare(text: str) -> str:
    """Lowercased words only: how an answer that restates the instruction is recognised."""
    return " ".join(re.findall(r"\w+", normalize_text(text)))


def gate_echo(row: dict[str, Any], cfg: ScoreConfig) -> Verdict:
    """The answer repeats the instruction, or is exactly the input, instead of answering.

    The input is compared as written (only surrounding whitespace is ignored):
    editing tasks change nothing but case, punctuation or layout ("apple,
    banana" -> "Apple, Banana", "remove the unnecessary comma", "convert to
    markdown"), so a folded comparison called their answers copies. The
    instruction is compared folded: it holds the command itself, so an answer
    equal to it up to case and punctuation restates the task, never edits text.
    """
    raw_out = (row.get("output") or "").strip()
    raw_inp = (row.get("input") or "").strip()
    out = _bare(raw_out)
    ins = _bare(row.get("instruction") or "")
    if not out:
        return None
    if out == ins:
        return Drop("echo", "the answer is the instruction")
    if raw_inp and raw_out == raw_inp:
        # Self-Instruct's input == output rule; near-copies of the input are
        # legitimate (grammar fixes, recasing), so only an exact copy counts.
        return Drop("echo", "the answer is the input")
    if ins and out.startswith(ins) and len(out) - len(ins) < 12:
        return Drop("echo", "the answer is the instruction plus a few characters")
    return None


# Apology-led refusals; skipped when the task itself is about apologising.
_APOLOGY = re.compile(
    r"\b(i'?m|i am) (so |very |truly )?sorry,? (but )?(i|as an ai)\b[^.\n]{0,40}\b(can'?t|cannot|can not|am unable|"
    r"won'?t|will not|am not able|don'?t)\b|\bi apologi[sz]e,? (but|for any confusion)\b|"
    r"^\s*(sorry|apologies),? (but )?i\b", _I | re.MULTILINE)
_REFUSAL = re.compile(
    r"\bi (can'?t|cannot|can not|won'?t|will not|am unable to|am not able to|'m unable to|'m not able to) "
    r"(help|assist|provide|fulfil+|comply|answer|do that|complete|generate|create|write|engage|support|respond)"
    r"( you)?( with)?( (that|this|your|such|the)\b| requests?\b|\.|,|$)|"
    r"\b(it is|it's|it would be) (not appropriate|inappropriate|unethical) (for me )?to\b|"
    r"\bi must (respectfully )?decline\b|\bunfortunately,? i (can'?t|cannot|am unable|'m unable)\b", _I)
_ABOUT_APOLOGY = re.compile(r"\bapolog|\bsorry\b", _I)


def _refusal_match(row: dict[str, Any]) -> re.Match | None:
    out = row.get("output") or ""
    m = _REFUSAL.search(out)
    if m is None and not _ABOUT_APOLOGY.search(_prompt(row)):
        m = _APOLOGY.search(out)
    return m


def gate_refusal(row: dict[str, Any], cfg: ScoreConfig) -> Verdict:
    """A refusal is dropped unless the request is one that should be refused (HARMFUL_REQUEST_MARKERS)."""
    m = _refusal_match(row)
    if m and harmful_request(row) is None:
        out = row.get("output") or ""
        return Drop("refusal", _snippet(out, m))
    return None


def kept_refusal(row: dict[str, Any], cfg: ScoreConfig) -> str | None:
    """The harmful-request marker of a refusal the refusal gate kept on purpose, else None."""
    if "refusal" not in cfg.gates or _refusal_match(row) is None:
        return None
    return harmful_request(row)


_DISCLAIMER = re.compile(
    r"\bas an? (ai|artificial intelligence|language model|large language model|ai language model|ai assistant|"
    r"ai model|virtual assistant|text-based ai|llm)\b|\bi'?m (just |only |merely )?an? (ai|language model|"
    r"ai language model|large language model)\b|\bi am (just |only |merely )?an? (ai|language model|"
    r"ai language model|large language model)\b|\bi (do not|don'?t) have (personal )?(opinions|feelings|emotions|"
    r"beliefs|preferences|personal experiences|a physical body|the ability to browse|access to (the internet|real-time))\b|"
    r"\bmy (knowledge )?(cutoff|cut-off)\b|\bmy training data\b|\bi was (trained|created|developed) by\b", _I)


def gate_ai_disclaimer(row: dict[str, Any], cfg: ScoreConfig) -> Verdict:
    out = row.get("output") or ""
    m = _DISCLAIMER.search(out)
    if m and not _DISCLAIMER.search(_prompt(row)):  # a prompt asking the model to speak "as an AI" is fine
        return Drop("ai_disclaimer", _snippet(out, m))
    return None


_CLEAN_END = re.compile(r"""([.!?…。！？;)\]}"'`*_~>|]|```|\d|[\U0001F300-\U0001FAFF\u2600-\u27BF])\s*$""")
# Words a finished sentence practically never ends on (particles such as "in",
# "on", "up" are left out: "the waves rolling in" is a complete line).
_DANGLING = re.compile(r"(,|:|\(|-|–|—|(?:^|\s)(a|an|the|and|or|but|of|to|with|from|for|by|because|than|"
                       r"if|including|between|into|such|their|its|your|our|my|these|whose|e\.g|i\.e))\s*$", _I)
_INVISIBLE = "\u200b\u200c\u200d\ufeff"
_STRUCTURED = re.compile(r"^\s*([-*+•]|\d+[.)]|#+|\|)")


def ends_mid_sentence(text: str) -> bool:
    """True when the text visibly stops in the middle of a sentence.

    A dangling comma, conjunction, article or preposition is the strong sign.
    A long prose line with sentences before it that ends on a bare word is
    the weak one; list items, headings, table rows and short answers ("Paris",
    "Positive") legitimately end without punctuation.
    """
    t = (text or "").rstrip().rstrip(_INVISIBLE).rstrip()
    if not t or _CLEAN_END.search(t) or "/" in t.split()[-1]:
        return False  # clean ending, or a path or URL as the last word
    m = _DANGLING.search(t)
    if m is None:
        return False
    lines = t.splitlines()
    last = lines[-1]
    if m.group(2) and _STRUCTURED.match(last):
        return False  # a list item or heading may end on any word
    if last.endswith(",") and len(last.split()) <= 3 and len(lines) > 1 and not lines[-2].strip():
        return False  # a letter's sign-off ("Sincerely,")
    return True


def _bare_prose_ending(text: str) -> bool:
    """The last line is prose of 8+ words with no closing punctuation (lists, headings, tables excepted)."""
    t = (text or "").rstrip().rstrip(_INVISIBLE).rstrip()
    if not t or _CLEAN_END.search(t):
        return False
    last = t.splitlines()[-1]
    return not _STRUCTURED.match(last) and len(last.split()) >= 8


def gate_truncated(row: dict[str, Any], cfg: ScoreConfig) -> Verdict:
    """Cut off mid-sentence.

    A dangling comma, article, conjunction or preposition is enough. A bare
    prose ending (no full stop) counts only when the teacher also reports
    finish_reason=length: people often leave out the last full stop, and an
    answer cut at max_tokens that happens to end cleanly is kept.
    """
    out = row.get("output") or ""
    cut = row.get("finish_reason") == "length"
    if ends_mid_sentence(out) or (cut and _bare_prose_ending(out)):
        why = "finish_reason=length, " if cut else ""
        return Drop("truncated", f"{why}ends with ...{out.rstrip()[-60:]!r}")
    return None


def gate_language_switch(row: dict[str, Any], cfg: ScoreConfig) -> Verdict:
    prompt = _prompt(row)
    if language.asks_for_language(prompt):
        return None
    out_lang = language.detect(row.get("output") or "")
    if out_lang is None:
        return None
    prompt_lang = language.detect(prompt)
    if prompt_lang is None and language.dominant_script(language.strip_code(prompt), min_letters=3) == "LATIN":
        prompt_lang = cfg.default_language  # a short Latin-script prompt: assume the run's language
    if prompt_lang is not None and prompt_lang != out_lang:
        return Drop("language_switch", f"prompt in {prompt_lang}, answer in {out_lang}")
    return None


_FENCE_LINE = re.compile(r"^ {0,3}(```|~~~)", re.MULTILINE)


def gate_code_fence(row: dict[str, Any], cfg: ScoreConfig) -> Verdict:
    n = len(_FENCE_LINE.findall(row.get("output") or ""))
    if n % 2:
        return Drop("unbalanced_code_fence", f"{n} code fence lines (odd: one block never closes)")
    return None


_ATTACH_PROMPT = re.compile(
    r"\b(attached|attachment|uploaded|enclosed)\b|"
    r"\b(this|the|following|above|below|attached|provided|given|my|these) (image|images|picture|pictures|photo|photos|"
    r"photograph|screenshot|diagram|chart|figure|video|audio|recording|drawing|scan|pdf)\b(?! (of|about|that|which) )", _I)
_CONTEXT_PROMPT = re.compile(
    r"\b(above|previous|preceding|earlier|aforementioned) (text|article|passage|conversation|message|paragraph|"
    r"email|story|poem|code|list)\b|\b(mentioned|shown|given) (above|earlier|before)\b", _I)
_ATTACH_ANSWER = re.compile(
    r"\bi (can'?t|cannot|can not|am unable to|'m unable to|do not|don'?t) (see|view|access|open|display|read) "
    r"(the|this|your|any|that) (image|picture|photo|attachment|file|video|link|document|screenshot)|"
    r"\b(the|this) (image|picture|photo|screenshot|attachment|video|file) (you|that you) "
    r"(provided|shared|uploaded|attached|sent)\b|\bas (shown|seen|depicted) in the (image|picture|figure|photo|diagram)\b", _I)


def gate_unseen_attachment(row: dict[str, Any], cfg: ScoreConfig) -> Verdict:
    """The task needs something a text model cannot see: an attachment, an image, earlier context."""
    ins = row.get("instruction") or ""
    m = _ATTACH_PROMPT.search(ins)
    if m:
        return Drop("unseen_attachment", f"instruction: {_snippet(ins, m)}")
    if not (row.get("input") or "").strip():
        m = _CONTEXT_PROMPT.search(ins)
        if m:
            return Drop("unseen_attachment", f"instruction refers to context it lacks: {_snippet(ins, m)}")
    out = row.get("output") or ""
    m = _ATTACH_ANSWER.search(out)
    if m:
        return Drop("unseen_attachment", f"answer: {_snippet(out, m)}")
    return None


_OTHER_ANSWERS = re.compile(
    r"\b(as|like) (mentioned|stated|noted|said|suggested|pointed out) (in|by) (another|other|the other|a previous|"
    r"the previous|an earlier|the accepted|the top) (answers?|posts?|comments?|replies|reply|users?|posters?)\b|"
    r"\bother answers\b|\bthe accepted answer\b|\bstack ?(exchange|overflow)\b|\b(up|down)-?vot(e|ed|es|ing)\b|"
    r"\bthis thread\b|^\s*edit\s*\d*\s*:", _I | re.MULTILINE)


def gate_other_answer_reference(row: dict[str, Any], cfg: ScoreConfig) -> Verdict:
    out = row.get("output") or ""
    m = _OTHER_ANSWERS.search(out)
    if m and not _OTHER_ANSWERS.search(_prompt(row)):
        return Drop("other_answer_reference", _snippet(out, m))
    return None


_ANECDOTE = re.compile(
    r"^\W*(in my (own |personal )?experience|when i was (a |young|little|in)|i remember (when|the|once)|i once\b|"
    r"personally,? i\b|back when i\b|as a (father|mother|parent|teacher|doctor|nurse|developer|programmer|engineer|"
    r"lawyer|student)\b,? i\b|my (wife|husband|friend|son|daughter|mom|dad|mother|father|boss|girlfriend|boyfriend)\b)", _I)
_PERSONAL_TASK = re.compile(r"\bfirst[- ]person\b|\bstory\b|\bdiary\b|\bletter\b|\bpretend\b|\bimagine\b|\byou are\b|"
                            r"\byour (own )?(experience|life|favou?rite)\b|\brole[- ]?play\b|\bas if you\b|"
                            r"\byou (have|had|once|ever|did)\b|\ba time (when )?you\b|\bcreative\b|\bfunny\b|\bjoke\b|"
                            r"\bhumou?r|\bpoem\b|\bfiction|\bnarrative\b", _I)


def gate_first_person_anecdote(row: dict[str, Any], cfg: ScoreConfig) -> Verdict:
    """LIMA dropped answers written as personal anecdotes; asked-for stories and role play are exempt."""
    out = row.get("output") or ""
    m = _ANECDOTE.search(out)
    if m and not _PERSONAL_TASK.search(_prompt(row)) and (row.get("task_kind") or "") != "creative_writing":
        return Drop("first_person_anecdote", _snippet(out, m))
    return None


_URL = re.compile(r"\bhttps?://[^\s)>\]]+|\bwww\.[a-z0-9-]+(\.[a-z0-9-]+)+[^\s)>\]]*", _I)
_MD_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_HTML = re.compile(r"</?(a|div|span|p|br|hr|img|table|tr|td|th|ul|ol|li|h[1-6]|html|body|head|script|style|iframe|"
                   r"b|i|u|em|strong|font|center|sup|sub|blockquote|pre|code|form|input|button|meta|link)\b[^<>]{0,200}/?>", _I)
_ENTITY = re.compile(r"&(nbsp|amp|lt|gt|quot|apos|#\d{2,5}|#x[0-9a-f]{2,4});", _I)
_ASKS_MARKUP = re.compile(r"\b(html|xml|markup|tags?|web ?page|website|svg|jsx|xhtml|email template)\b|<[a-z]+[ >]", _I)


def gate_url_html(row: dict[str, Any], cfg: ScoreConfig) -> Verdict:
    """URLs, image markup, HTML tags and entities outside code; LIMA stripped them (code and lists stay)."""
    out = language.strip_code(row.get("output") or "")
    prompt = _prompt(row)
    m = _MD_IMAGE.search(out)
    if m:
        return Drop("url_or_html", f"image markup: {_snippet(out, m)}")
    for m in _URL.finditer(out):
        if m.group(0).rstrip(".,;:!?") not in prompt:  # a URL copied from the task is fine
            return Drop("url_or_html", f"url: {m.group(0)[:80]}")
    if not _ASKS_MARKUP.search(prompt):
        m = _HTML.search(out) or _ENTITY.search(out)
        if m:
            return Drop("url_or_html", f"html: {_snippet(out, m)}")
    return None


def gate_length(row: dict[str, Any], cfg: ScoreConfig) -> Verdict:
    n = len((row.get("output") or "").strip())
    (lo, hi), rule = cfg.bounds_for(row.get("task_kind"))
    if n < lo or n > hi:
        kind = row.get("task_kind") or "none"
        return Drop("length_out_of_bounds", f"{n} chars, task_kind={kind} needs [{lo}, {hi}] ({rule})")
    return None


GATE_FUNCS: dict[str, Callable[[dict[str, Any], ScoreConfig], Verdict]] = {
    "empty": gate_empty,
    "echo": gate_echo,
    "refusal": gate_refusal,
    "ai_disclaimer": gate_ai_disclaimer,
    "truncated": gate_truncated,
    "language_switch": gate_language_switch,
    "code_fence": gate_code_fence,
    "unseen_attachment": gate_unseen_attachment,
    "other_answer_reference": gate_other_answer_reference,
    "first_person_anecdote": gate_first_person_anecdote,
    "url_html": gate_url_html,
    "length": gate_length,
}


def check_row(row: dict[str, Any], cfg: ScoreConfig) -> list[tuple[str, str]]:
    """Every failing gate's (reason, detail), in the configured order; empty when the row passes."""
    failures = []
    for name in cfg.gates:
        verdict = GATE_FUNCS[name](row, cfg)
        if verdict is not None:
            failures.append(verdict)
            if name == "empty":
                break  # nothing else can be said about an empty answer
    return failures
