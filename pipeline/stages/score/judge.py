"""Teacher-judged scores: quality 1-6, complexity 1-6 (Deita), accuracy 0-5 (AlpaGasus).

One request per (row, score); all of a shard's requests to one teacher go in
one `chat` call (Deita's two scorers are two teachers: one call each).

Mode "deita" (deita.py): a raw text completion in the scorer's own format,
max_tokens 1, and the expected value over "1".."6" at the first token
(method `deita`); no usable logprobs is `unparseable`, with the reason.

Mode "rubric": a zero-shot rubric prompt as a chat. A judgment becomes a
number in one of two ways:

- `logprobs`: the reply's text holds a valid score and the backend returned
  top-k logprobs: the score is the expected value over the score tokens at
  the position where the reply's score digit was generated, probabilities
  renormalised over those tokens only (Deita takes the first generated
  position; we take the first position holding the score digit, so a reply
  like "Score: 5" still works).
- `parsed`: no logprobs (or a decimal score such as "4.5"): the number in the text.

Anything else is `unparseable` (or `error` when the teacher failed): the
value is None, the reason and the raw reply are kept, and the row's combined
score stays null. Nothing is ever replaced by a default score.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from ...prompts import load_template
from ...teacher.base import ChatRequest, Completion, Sampling, completion_request
from . import deita
from .config import ScoreConfig

# judge -> (template, lowest, highest score)
SCALES: dict[str, tuple[str, int, int]] = {
    "quality": ("judge/quality.txt", 1, 6),
    "complexity": ("judge/complexity.txt", 1, 6),
    "accuracy": ("judge/accuracy.txt", 0, 5),
}

_NUM = r"(\d+(?:\.\d+)?)"
# The first line is just the score, maybe with a label, a "/6" or "out of 6", markdown bold, a full stop.
_FIRST_LINE = re.compile(r"^\W{0,3}(?:(?:score|rating|quality|complexity|accuracy)\s*[:=]?\s*)?\**\s*" + _NUM
                         + r"\s*\**\s*(?:(?:/|out of)\s*(\d+))?\s*\**\s*(?:[.!]|\s[-–:]\s*[^\d]*)?\s*$", re.I)
# A reply that lists several scale points ("1 - useless", "2 - poor", ...) is the rubric echoed back.
_SCALE_LINE = re.compile(r"^\W{0,3}(\d+)\s*[-–:.)=]", re.M)
_BRACKETS = re.compile(r"\[\[\s*" + _NUM + r"\s*\]\]")
_LABELLED = re.compile(r"\b(?:score|rating)\s*(?:is|of|:|=)\s*\**\s*" + _NUM + r"\b", re.I)
_OUT_OF = re.compile(_NUM + r"\s*(?:/|out of)\s*(\d+)\b", re.I)


@dataclass
class Judgment:
    value: float | None
    method: str          # deita | logprobs | parsed | unparseable | error | unanswered (an outside failure)
    reason: str = ""     # why unparseable / the error
    raw: str = ""        # the reply, cut to 200 characters

    def to_meta(self) -> dict[str, Any]:
        d: dict[str, Any] = {"value": self.value, "method": self.method, "raw": self.raw}
        if self.reason:
            d["reason"] = self.reason
        return d


def parse_score_text(text: str | None, lo: int, hi: int) -> tuple[float | None, str]:
    """(score, "") when the reply states one score in [lo, hi]; (None, reason) otherwise."""
    if text is None or not text.strip():
        return None, "empty reply"
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if len(set(_SCALE_LINE.findall(text))) > 1:
        return None, "the reply lists several scores"
    m = _FIRST_LINE.match(lines[0])
    scale_max = int(m.group(2)) if m is not None and m.group(2) else None
    if m is None:
        found = _BRACKETS.findall(text) or _LABELLED.findall(text)
        if len({float(x) for x in found}) > 1:
            return None, f"the reply gives several scores {sorted(set(found))}"
        m = _BRACKETS.search(text) or _LABELLED.search(text)
    if m is None:
        m = _OUT_OF.search(text)
        if m is not None:
            scale_max = int(m.group(2))
    if m is None:
        return None, "no score in the reply"
    if scale_max is not None and scale_max != hi:
        return None, f"score on another scale ({m.group(0)!r})"
    value = float(m.group(1))
    if not lo <= value <= hi:
        return None, f"score {m.group(1)} outside {lo}-{hi}"
    return value, ""


def _top_probs(entry: dict[str, Any]) -> dict[str, float]:
    """token -> probability at one position, from OpenAI-style top_logprobs (a list or a dict)."""
    top = entry.get("top_logprobs") or []
    pairs = top.items() if isinstance(top, dict) else ((t.get("token"), t.get("logprob")) for t in top)
    out: dict[str, float] = {}
    for token, lp in pairs:
        if token is None or lp is None:
            continue
        out[token] = out.get(token, 0.0) + math.exp(float(lp))
    if entry.get("token") is not None and entry.get("logprob") is not None and entry["token"] not in out:
        out[entry["token"]] = math.exp(float(entry["logprob"]))
    return out


def expected_score(logprobs: list[dict[str, Any]] | None, digit: str, lo: int, hi: int) -> float | None:
    """Deita's expected value sum(i * p_i) over the score tokens, at the position that produced `digit`."""
    if not logprobs:
        return None
    valid = {str(i) for i in range(lo, hi + 1)}
    for entry in logprobs:
        token = (entry.get("token") or "").strip()
        if token != digit:
            continue
        mass: dict[int, float] = {}
        for tok, p in _top_probs(entry).items():
            t = tok.strip()
            if t in valid:  # "4" and " 4" are the same score
                mass[int(t)] = mass.get(int(t), 0.0) + p
        total = sum(mass.values())
        if total <= 0:
            return None
        return sum(i * p for i, p in mass.items()) / total
    return None


def parse_judgment(completion: Completion, judge: str, mode: str = "rubric") -> Judgment:
    _, lo, hi = SCALES[judge]
    if completion.unanswered:  # the teacher's fault, not the row's: the row is asked again on the next run
        err = completion.error
        return Judgment(None, "unanswered", f"{err.kind}: {err.message}", "")
    if not completion.ok:
        err = completion.error
        return Judgment(None, "error", f"{err.kind}: {err.message}" if err else "no text", "")
    raw = (completion.text or "")[:200]
    if mode == "deita":
        ev, why = deita.expected_value(completion.logprobs)
        return Judgment(None, "unparseable", why, raw) if ev is None else Judgment(round(ev, 4), "deita", "", raw)
    value, reason = parse_score_text(completion.text, lo, hi)
    if value is None:
        return Judgment(None, "unparseable", reason, raw)
    if value.is_integer():
        ev = expected_score(completion.logprobs, str(int(value)), lo, hi)
        if ev is not None:
            return Judgment(round(ev, 4), "logprobs", "", raw)
    return Judgment(value, "parsed", "", raw)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + " [...]"


def build_request(row: dict[str, Any], judge: str, cfg: ScoreConfig, mode: str = "rubric") -> ChatRequest:
    template, _, _ = SCALES[judge]
    ins, inp, out = (row.get("instruction") or ""), (row.get("input") or ""), (row.get("output") or "")
    request = _cut(ins if not inp else f"{ins}\n\n{inp}", cfg.judge_max_chars)
    if mode == "deita":  # one token; its logprobs are the score. Temperature 0: raw logprobs on every server
        text = deita.render_prompt(judge, request, _cut(out, cfg.judge_max_chars))
        sampling = Sampling(temperature=0.0, top_p=1.0, max_tokens=1, logprobs=cfg.judge_logprobs or 20)
        return completion_request(text, sampling, record_id=row["id"], purpose=f"deita:{judge}")
    tpl = load_template(template)
    if judge == "quality":
        text = tpl.render(request=request, answer=_cut(out, cfg.judge_max_chars))
    elif judge == "complexity":
        text = tpl.render(request=request)
    else:
        text = tpl.render(instruction=_cut(ins, cfg.judge_max_chars), input=_cut(inp, cfg.judge_max_chars) or "(none)",
                          response=_cut(out, cfg.judge_max_chars))
    sampling = Sampling(temperature=cfg.judge_temperature, top_p=1.0, max_tokens=cfg.judge_max_tokens,
                        logprobs=cfg.judge_logprobs or None)
    return ChatRequest(messages=[{"role": "user", "content": text}], sampling=sampling,
                       record_id=row["id"], purpose=f"judge:{judge}")


def template_hashes(judges: list[str], mode: str = "rubric") -> dict[str, str]:
    return {j: load_template(deita.TEMPLATES[j] if mode == "deita" else SCALES[j][0]).hash for j in judges}


def judge_rows(rows: list[dict[str, Any]], teacher: Any, cfg: ScoreConfig, mode: str = "rubric") -> list[dict[str, Judgment]]:
    """Judgments per row for every configured judge. `teacher`: one teacher for every score, or a function of
    the score's name giving its teacher; one call per distinct teacher with all of its requests."""
    teacher_of = teacher if callable(teacher) and not hasattr(teacher, "chat") else (lambda _j: teacher)
    by_teacher: dict[int, tuple[Any, list[str]]] = {}
    for j in cfg.judges:
        t = teacher_of(j)
        by_teacher.setdefault(id(t), (t, []))[1].append(j)
    out: list[dict[str, Judgment]] = [{} for _ in rows]
    for t, names in by_teacher.values():
        requests = [build_request(r, j, cfg, mode) for r in rows for j in names]
        completions = t.chat(requests) if requests else []
        if len(completions) != len(requests):
            raise RuntimeError(f"teacher returned {len(completions)} completions for {len(requests)} requests")
        k = 0
        for per in out:
            for j in names:
                per[j] = parse_judgment(completions[k], j, mode)
                k += 1
    return [{j: per[j] for j in cfg.judges} for per in out]
