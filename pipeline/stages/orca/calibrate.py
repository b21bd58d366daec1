"""`distill orca calibrate`: pick the best strategy per task kind on a small labelled
sample (Orca 2's strategy selection), and write the mapping it found.

Reads: a dataset whose rows carry a reference answer in `output` (e.g. an
imported Dolly or FLAN file). Per task kind it samples up to `per_kind` rows
(seeded by (run seed, id), so reruns pick the same rows), asks the teacher to
answer each under every candidate strategy (one batched `chat` call), and
judges each answer against the reference:

- `exact`: the answer's final line (after "Answer:" when present) equals the
  reference after SQuAD-style normalisation, or contains a short reference
  (<= 8 words) as a phrase; ties are broken by token F1, then catalog order.
- `teacher`: the teacher rates agreement with the reference from 1 to 5
  (prompts/orca/judge.txt), scaled to 0..1; unparseable ratings score 0.

Writes: a TOML file with [strategy_map] (read by `distill orca --strategy-map`)
and [scores.<kind>] (every strategy's mean score, mean F1 and row count).
"""

from __future__ import annotations

import re
import string
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ...context import RunContext
from ...errors import ConfigError, InputFileError
from ...prompts import load_template
from ...records import now_utc
from ...seeding import seed_for
from ...store import Dataset
from ...teacher.base import ChatRequest, Sampling
from .catalog import write_strategy_map
from .config import OrcaConfig
from .stage import OrcaStage, user_turn

JUDGE_TEMPLATE = "orca/judge.txt"
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)
_ANSWER_MARK = re.compile(r"answer\s*:\s*", re.IGNORECASE)
_RATING = re.compile(r"(?<!\d)([1-5])(?!\d)")


def normalize_answer(text: str) -> str:
    text = (text or "").lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def final_answer(text: str) -> str:
    """The part of an answer that states the result: after the last 'Answer:', else the last line."""
    text = (text or "").strip()
    marks = list(_ANSWER_MARK.finditer(text))
    if marks:
        return text[marks[-1].end():].strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def exact_match(answer: str, reference: str) -> float:
    ref = normalize_answer(reference)
    if not ref:
        return 0.0
    final = normalize_answer(final_answer(answer))
    if final == ref or normalize_answer(answer) == ref:
        return 1.0
    if len(ref.split()) <= 8 and re.search(r"(?<!\w)" + re.escape(ref) + r"(?!\w)", final):
        return 1.0
    return 0.0


def token_f1(answer: str, reference: str) -> float:
    """Token F1 against the reference, of the final answer or the whole answer (the better)."""
    return max(_f1(final_answer(answer), reference), _f1(answer, reference))


def _f1(answer: str, reference: str) -> float:
    a, r = normalize_answer(answer).split(), normalize_answer(reference).split()
    common = sum((Counter(a) & Counter(r)).values())
    if not a or not r or not common:
        return 0.0
    p, rc = common / len(a), common / len(r)
    return 2 * p * rc / (p + rc)


def parse_rating(text: str | None) -> int | None:
    m = _RATING.search(text or "")
    return int(m.group(1)) if m else None


@dataclass
class CalibrationResult:
    strategy_map: dict[str, str]
    scores: dict[str, dict[str, dict[str, Any]]]  # kind -> strategy -> {score, f1, n, errors}
    rows: int
    path: Path | None = None
    counts: dict[str, int] = field(default_factory=dict)


def sample_rows(rows: list[dict[str, Any]], kinds: list[tuple[str, str]], per_kind: int,
                seed: int) -> dict[str, list[dict[str, Any]]]:
    """Up to `per_kind` rows per kind, chosen by a per-row seeded key (input order does not matter)."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row, (kind, _) in zip(rows, kinds):
        groups[kind].append(row)
    return {k: sorted(g, key=lambda r: seed_for(seed, r["id"], "orca:calibrate"))[:per_kind]
            for k, g in sorted(groups.items())}


def calibrate(dataset: str | Path | Dataset, out_file: str | Path | None, ctx: RunContext,
              settings: OrcaConfig | None = None, *, per_kind: int = 8,
              judge: Literal["exact", "teacher"] = "exact", strategies: list[str] | None = None,
              limit: int | None = None) -> CalibrationResult:
    """Measure every candidate strategy per task kind; write and return the best mapping."""
    if judge not in ("exact", "teacher"):
        raise ConfigError(f"--judge must be 'exact' or 'teacher', not '{judge}'")
    stage = OrcaStage(settings)
    names = strategies or stage.strategies.names
    unknown = [n for n in names if n not in stage.strategies.texts]
    if unknown:
        raise ConfigError(f"unknown strategies {unknown}; known: {', '.join(stage.strategies.names)}")
    ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset, require_complete=True)
    rows = []
    for r in ds.iter_rows():
        if limit is not None and len(rows) >= limit:
            break
        if (r.get("output") or "").strip():
            rows.append(r)
    if not rows:
        raise InputFileError(f"{ds.path}: no labelled rows (calibration needs rows whose `output` is a reference answer)")
    kinds, _ = stage.detect_kinds(rows, ctx)
    groups = sample_rows(rows, kinds, per_kind, ctx.seed)

    cases = [(kind, row, name) for kind, group in groups.items() for row in group for name in names]
    reqs = [ChatRequest(messages=[{"role": "system", "content": stage.strategies.texts[name]},
                                  {"role": "user", "content": user_turn(row)}],
                        sampling=stage.sampling, record_id=row["id"], purpose=f"orca:calibrate:{name}")
            for kind, row, name in cases]
    answers = ctx.teacher.chat(reqs)
    counts: Counter = Counter(requests=len(reqs), answer_errors=sum(not c.ok for c in answers))

    scores = [exact_match(c.text, row["output"]) if c.ok else 0.0 for (_, row, _), c in zip(cases, answers)]
    if judge == "teacher":
        tpl = load_template(JUDGE_TEMPLATE)
        idx = [i for i, c in enumerate(answers) if c.ok and (c.text or "").strip()]
        jreqs = [ChatRequest(messages=[{"role": "user", "content": tpl.render(
                     question=user_turn(cases[i][1]), reference=cases[i][1]["output"], answer=answers[i].text)}],
                     sampling=Sampling(temperature=0.0, max_tokens=8), record_id=cases[i][1]["id"],
                     purpose=f"orca:judge:{cases[i][2]}") for i in idx]
        scores = [0.0] * len(cases)
        for i, c in zip(idx, ctx.teacher.chat(jreqs)):
            rating = parse_rating(c.text) if c.ok else None
            counts["judge_unparsed"] += rating is None
            scores[i] = (rating - 1) / 4 if rating else 0.0
        counts["judge_requests"] = len(jreqs)

    table: dict[str, dict[str, dict[str, Any]]] = defaultdict(lambda: defaultdict(lambda: Counter()))
    for (kind, row, name), c, s in zip(cases, answers, scores):
        cell = table[kind][name]
        cell["n"] += 1
        cell["errors"] += not c.ok
        cell["score"] += s
        cell["f1"] += token_f1(c.text or "", row["output"]) if c.ok else 0.0
    out_scores: dict[str, dict[str, dict[str, Any]]] = {}
    mapping: dict[str, str] = {}
    for kind in sorted(table):
        cells = {name: {"score": round(cell["score"] / cell["n"], 4), "f1": round(cell["f1"] / cell["n"], 4),
                        "n": int(cell["n"]), "errors": int(cell["errors"])}
                 for name, cell in ((n, table[kind][n]) for n in names)}
        out_scores[kind] = cells
        if all(c["score"] == 0 and c["f1"] == 0 for c in cells.values()):
            continue  # no signal (nothing answered, or nothing matched): keep the kind's default
        mapping[kind] = max(names, key=lambda n: (cells[n]["score"], cells[n]["f1"], -names.index(n)))
    result = CalibrationResult(mapping, out_scores, rows=sum(len(g) for g in groups.values()),
                               counts=dict(counts))
    if out_file is not None:
        t = ctx.teacher
        write_strategy_map(out_file, mapping, out_scores, {
            "created_at": now_utc().isoformat(), "dataset": str(ds.path), "judge": judge,
            "per_kind": per_kind, "rows": result.rows, "seed": ctx.seed, "teacher_backend": t.backend,
            "teacher_model": t.model, "strategies": ",".join(names), "strategies_hash": stage.strategies.hash})
        result.path = Path(out_file)
    return result
