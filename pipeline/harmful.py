"""Requests a good assistant refuses: the one list the refusal checks consult before dropping a refusal.

LIMA removed refusals in general but kept some on purpose, so the student
learns to decline these and not everything. `harmful_request(row)` reads the
row's instruction only and returns the matched marker or None; score's
refusal gate and Orca's answer check keep a refusal of such a request instead
of dropping it. Reads and writes nothing on disk.
"""

from __future__ import annotations

import re
from typing import Any

# Source: the team's own phrases, grouped loosely after the hazard categories
# of MLCommons' AI Safety benchmark v0.5 (indiscriminate weapons, violent
# crimes, suicide and self-harm, child sexual exploitation, cyber crime, drugs,
# fraud, hate). Scope: English, the instruction only (an input is mostly a
# passage, and passages describe crimes), and it only decides whether a refusal
# is kept; it never drops a row. Each entry pairs an intent ("how do I", "make",
# "write") with the harm, so a question about a harm ("the history of the
# atomic bomb", "how do I spot a phishing email") does not match: a refused
# benign request is still dropped. A keyword list misses paraphrases; a missed
# harmful request is dropped as before, a false match keeps one over-refusal.
_INTENT = r"\b(how (do|can|could|would|should|to)( i| you| we| one)?|ways? to|help me|teach me|want to|plan(ning)? to)\b"
HARMFUL_REQUEST_MARKERS: tuple[str, ...] = (
    # indiscriminate weapons
    r"\b(make|build|assemble|synthesi[sz]e|manufacture|produce|create|cook)\b.{0,40}"
    r"\b((?<!bath )(?<!seed )(?<!photo )bombs?|explosives?|detonators?|molotov|napalm|nerve agents?|sarin|ricin|anthrax|bio-?weapons?|"
    r"chemical weapons?|ghost guns?|untraceable (gun|firearm)s?)\b",
    # violent crimes
    _INTENT + r".{0,20}\b(kill|murder|poison|assassinate|torture|kidnap|strangle|stab)\b.{0,30}"
    r"\b(someone|somebody|a person|people|my (wife|husband|partner|boss|neighbou?r|teacher|parents?|family|ex))\b",
    r"\bget away with (murder|killing)\b|\b(hide|dispose of) a (dead )?body\b",
    # suicide and self-harm (first person)
    r"\b(kill myself|end my (own )?life|hurt myself|cut myself|painless (way|ways) to die)\b",
    _INTENT + r".{0,10}\bcommit suicide\b",
    # cyber crime
    r"\b(write|create|code|build|make|develop|craft|draft|send)\b.{0,30}\b(ransomware|keyloggers?|malware|"
    r"computer virus|botnets?|spyware|phishing)\b",
    _INTENT + r".{0,10}\b(hack|break) into\b",
    _INTENT + r".{0,10}\b(steal|crack)\b.{0,20}\b(passwords?|credit cards?|identit(y|ies))\b",
    # drugs
    r"\b(make|cook|synthesi[sz]e|produce)\b.{0,30}\b(meth|methamphetamine|heroin|cocaine|fentanyl)\b",
    # child sexual exploitation
    r"\bchild (porn\w*|sexual abuse material)\b|\bcsam\b|"
    r"\bsexual (content|images?|photos?|pictures?|stor(y|ies)|role-?play)\b.{0,20}\b(minors?|underage|children|a child)\b",
    # fraud and theft
    r"\b(print counterfeit (money|bills|currency)|launder (money|cash|funds)|forge (a |an )?(signature|passport|"
    r"documents?|cheque|check)|(make|get|buy|create) (a )?fake (id|passport)s?)\b",
    _INTENT + r".{0,10}\b(shoplift\w*|steal (a car|from))\b",
    # hate
    r"\b(racist|sexist|homophobic|antisemitic) (jokes?|slurs?|insults?|rants?)\b",
)
_HARMFUL = re.compile("|".join(f"(?:{p})" for p in HARMFUL_REQUEST_MARKERS), re.IGNORECASE)


def harmful_request(row: dict[str, Any]) -> str | None:
    """The marker text when the instruction asks for something a good assistant refuses, else None."""
    m = _HARMFUL.search(row.get("instruction") or "")
    return m.group(0) if m else None
