"""Quality pairs built honestly from real data, and the AUC of a scorer on them (tests and scripts/measure_score_auc.py).

Reads `alpaca_helpfulness_2k.json` and `wizardlm_testset_218.jsonl` from the
shared data folder; writes nothing. Pairs:

- swapped: each sampled row against the same row with the next sampled row's
  answer (a derangement: no row keeps its own answer);
- cut: each row whose answer has more than one sentence against the same row
  with the answer cut to its first sentence;
- difficulty: WizardLM test-set instructions, a pair per two rows of different
  Difficulty (1-10, the WizardLM paper's own rating).

AUC: the probability that the real (or harder) item scores higher, ties
counting half; a missing score (None) counts as a tie with everything.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any, Callable, Sequence

_FIRST_SENTENCE = re.compile(r"(.+?[.!?])(?=\s|$)", re.S)


def first_sentence(text: str) -> str:
    m = _FIRST_SENTENCE.match(text.strip())
    return m.group(1) if m else text.strip()


def alpaca_rows(shared: Path, n: int, seed: int = 0) -> list[dict[str, Any]]:
    rows = json.loads((shared / "alpaca_helpfulness_2k.json").read_text())
    picked = random.Random(seed).sample(rows, n)
    return [{"id": f"alpaca-{seed}-{i}", "instruction": r["instruction"], "input": r.get("input") or "",
             "output": r["output"]} for i, r in enumerate(picked)]


def swapped(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [dict(r, id=r["id"] + "-swapped", output=rows[(i + 1) % len(rows)]["output"]) for i, r in enumerate(rows)]


def cut(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the rows whose answer has more than its first sentence, those rows cut to it)."""
    real = [r for r in rows if first_sentence(r["output"]) != r["output"].strip()]
    return real, [dict(r, id=r["id"] + "-cut", output=first_sentence(r["output"])) for r in real]


def wizardlm_rows(shared: Path, n: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (shared / "wizardlm_testset_218.jsonl").read_text().splitlines() if line.strip()]
    if n is not None:
        rows = random.Random(seed).sample(rows, n)
    return [{"id": f"wizardlm-{r['idx']}", "instruction": r["Instruction"], "input": "", "output": "",
             "difficulty": int(r["Difficulty"])} for r in rows]


def auc(pos: Sequence[float | None], neg: Sequence[float | None]) -> float:
    """P(a positive scores above a negative), over all pairs, ties (and missing scores) half."""
    total = 0.0
    for p in pos:
        for q in neg:
            total += 0.5 if p is None or q is None or p == q else float(p > q)
    return total / (len(pos) * len(neg))


def difficulty_auc(rows: list[dict[str, Any]], scores: Sequence[float | None]) -> float:
    """P(the harder of two instructions of different Difficulty scores higher), ties half."""
    total, n = 0.0, 0
    for i, a in enumerate(rows):
        for j in range(i + 1, len(rows)):
            b = rows[j]
            if a["difficulty"] == b["difficulty"]:
                continue
            hi, lo = (scores[i], scores[j]) if a["difficulty"] > b["difficulty"] else (scores[j], scores[i])
            total += 0.5 if hi is None or lo is None or hi == lo else float(hi > lo)
            n += 1
    return total / n


def quality_aucs(score: Callable[[list[dict[str, Any]]], list[float | None]], rows: list[dict[str, Any]]) -> dict:
    """{"swapped": AUC, "cut": AUC} of `score` (rows -> one score each) on the two kinds of pairs."""
    real_cut, cut_rows = cut(rows)
    s_real = score(rows)
    by_id = dict(zip((r["id"] for r in rows), s_real))
    return {"swapped": auc(s_real, score(swapped(rows))),
            "cut": auc([by_id[r["id"]] for r in real_cut], score(cut_rows))}
