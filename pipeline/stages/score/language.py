"""Cheap language identification for the language-switch gate: script, then function words.

Not a general language identifier: it answers "is this text clearly in
another language than that one?" and says None whenever it is unsure, so
the gate never drops a row on a guess. Non-Latin scripts are told apart by
Unicode script; Latin-script languages by counts of very frequent function
words (lists written by the team, a dozen or two per language).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?", re.UNICODE)
_FENCE = re.compile(r"```.*?(```|\Z)", re.DOTALL)
_INLINE = re.compile(r"`[^`\n]*`")

# Words frequent in one language and rare in the others (ambiguous ones such
# as "a", "de", "en", "in", "la" are left out on purpose).
FUNCTION_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset("the and is are of to with that this it for you was were have has be not which what".split()),
    "fr": frozenset("le les et est une des du dans pour pas qui sur avec sont nous vous cette mais aux".split()),
    "de": frozenset("der das und ist nicht ein eine mit für auf sich dem ich sie wir auch oder".split()),
    "es": frozenset("el los las y es una del por para con que su como pero más está muy".split()),
    "it": frozenset("il gli della che è una sono del dei anche questo più nella delle".split()),
    "pt": frozenset("os é um uma dos das para não que mais seu sua são pelo".split()),
    "nl": frozenset("het een en van dat niet met voor zijn ook maar wij ze deze naar".split()),
}

LANGUAGE_NAMES = (
    "english", "french", "francais", "français", "german", "deutsch", "spanish", "español", "espanol", "italian",
    "italiano", "portuguese", "português", "dutch", "chinese", "mandarin", "cantonese", "japanese", "korean",
    "russian", "arabic", "hindi", "greek", "hebrew", "thai", "turkish", "polish", "swedish", "norwegian",
    "danish", "finnish", "vietnamese", "indonesian", "latin", "ukrainian", "czech", "persian", "urdu", "bengali",
    "swahili", "romanian", "hungarian", "tamil", "telugu", "punjabi", "malay", "filipino", "tagalog",
)
_ASKS_LANGUAGE = re.compile(r"\btranslat\w*|\blanguages?\b|\bbilingual\b|\b(" + "|".join(LANGUAGE_NAMES) + r")\b", re.I)

_SCRIPTS = ("LATIN", "CYRILLIC", "GREEK", "ARABIC", "HEBREW", "DEVANAGARI", "THAI", "HANGUL", "HIRAGANA",
            "KATAKANA", "CJK")


def strip_code(text: str) -> str:
    """Text without fenced and inline code: code says nothing about the prose language."""
    return _INLINE.sub(" ", _FENCE.sub(" ", text or ""))


def dominant_script(text: str, min_letters: int = 20) -> str | None:
    """The script of at least 60% of the letters (Japanese kana count as CJK), or None."""
    counts: Counter = Counter()
    for ch in text[:4000]:
        if ch.isalpha():
            name = unicodedata.name(ch, "")
            script = next((s for s in _SCRIPTS if name.startswith(s)), "OTHER")
            if script in ("HIRAGANA", "KATAKANA"):
                script = "CJK"
            counts[script] += 1
    total = sum(counts.values())
    if total < min_letters:
        return None
    script, n = counts.most_common(1)[0]
    return script if n >= 0.6 * total else None


def latin_language(text: str, min_hits: int = 4, min_share: float = 0.08) -> str | None:
    """The Latin-script language whose function words clearly dominate, or None.

    Clearly: at least `min_hits` of its function words, three times as many
    as the runner-up, and at least `min_share` of all words (lists of names
    or keywords have almost no function words and get None).
    """
    words = _WORD.findall(text[:4000].lower())
    hits: Counter = Counter()
    for w in words:
        for lang, fw in FUNCTION_WORDS.items():
            if w in fw:
                hits[lang] += 1
    if not hits:
        return None
    (best, n), *rest = hits.most_common(2)
    second = rest[0][1] if rest else 0
    if n >= min_hits and n >= 3 * second and n >= min_share * len(words):
        return best
    return None


def detect(text: str) -> str | None:
    """A language code ('en', 'fr', ...) for Latin text, a script name for others, or None."""
    text = strip_code(text)
    script = dominant_script(text)
    if script is None:
        return None
    if script != "LATIN":
        return script
    return latin_language(text)


def asks_for_language(prompt: str) -> bool:
    """The prompt names a language or asks for a translation: any language in the answer is fine."""
    return bool(_ASKS_LANGUAGE.search(prompt or ""))
