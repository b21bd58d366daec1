"""What `distill inspect` shows of a hard folder: the gaps, the hard flags, the new instructions and their parents.

Reads the folder's id, parent_id, origin, instruction and meta columns; writes nothing. `summary` is plain
data (inspect --json prints it as it is); `format_summary` is the human text.
"""

from __future__ import annotations

import json
from typing import Any

from ...store import Dataset


def summary(ds: Dataset, n: int = 3) -> dict[str, Any]:
    """Counts of verdicts and referee modes, the `n` widest gaps, and `n` new instructions beside their parents."""
    t = ds.read(columns=["id", "parent_id", "origin", "instruction", "meta"]).to_pylist()
    text = {r["id"]: r["instruction"] for r in t}
    judged, new, counts = [], [], {"hard": 0, "easy": 0, "unparseable": 0, "not_judged": 0, "new": 0}
    modes: dict[str, int] = {}
    for r in t:
        h = (json.loads(r["meta"]) if r["meta"] else {}).get("hard") or {}
        if "first_order" in h:  # a referee saw the row (folders before the logprobs referee: text)
            modes[h.get("referee_mode", "text")] = modes.get(h.get("referee_mode", "text"), 0) + 1
        if (r["origin"] or "").startswith("hard:"):
            counts["new"] += 1
            new.append({"id": r["id"], "generated_as": h.get("generated_as"), "round": h.get("generated_in_round"),
                        "instruction": r["instruction"], "parent_id": r["parent_id"],
                        "parent_instruction": text.get(r["parent_id"])})
        if "student_gap" in h:
            counts["hard" if h["hard"] else "easy"] += 1
            judged.append({"id": r["id"], "student_gap": h["student_gap"], "hard": h["hard"],
                           "teacher_score": h["teacher_score"], "student_score": h["student_score"],
                           "instruction": r["instruction"]})
        elif h.get("verdict") == "unparseable":
            counts["unparseable"] += 1
        elif not (r["origin"] or "").startswith("hard:"):
            counts["not_judged"] += 1
    gaps = [j["student_gap"] for j in judged]
    return {"counts": counts, "referee_modes": modes,
            "gap": {"min": round(min(gaps), 3), "mean": round(sum(gaps) / len(gaps), 3), "max": round(max(gaps), 3)}
            if gaps else None,
            "widest": sorted(judged, key=lambda j: (-j["student_gap"], j["id"]))[:n], "new": new[:n]}


def format_summary(s: dict[str, Any], width: int = 120) -> str:
    c = s["counts"]
    lines = [f"hard examples: {c['hard']} hard, {c['easy']} easy, {c['unparseable']} unparseable reviews, "
             f"{c['not_judged']} not judged; {c['new']} new instructions"]
    if s.get("referee_modes"):
        seen = sum(s["referee_modes"].values())
        lines.append(f"  referee: {', '.join(f'{m} ({n} rows)' for m, n in sorted(s['referee_modes'].items()))}; "
                     f"{c['hard'] + c['easy']} of {seen} rows got a gap")
    if s["gap"]:
        lines.append(f"  student_gap (teacher - student, 1-10, both orders): min {s['gap']['min']}, "
                     f"mean {s['gap']['mean']}, max {s['gap']['max']}")
    for j in s["widest"]:
        lines.append(f"  gap {j['student_gap']:+.2f} ({round(j['teacher_score'], 2)} vs {round(j['student_score'], 2)}) "
                     f"hard={str(j['hard']).lower()}  {j['id']}  {_clip(j['instruction'], width)}")
    for r in s["new"]:
        lines.append(f"  new ({r['generated_as']}, round {r['round']}) {r['id']}: {_clip(r['instruction'], width)}")
        lines.append(f"    <- parent {r['parent_id']}: {_clip(r['parent_instruction'] or '?', width)}")
    return "\n".join(lines)


def _clip(text: str, width: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"
