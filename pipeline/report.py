"""`distill report`: one self-contained HTML page about a run.

Reads a run folder (`<workdir>/<run-id>/`): each stage's `_manifest.json`, the
run summary, the last stage's rows (lengths, scores) and the dedup stages'
rejected rows (cluster sizes). Writes `report.html` next to them: the per-stage
funnel, drops by reason, length and score distributions, dedup cluster sizes
and token cost. Charts are inline SVG, so the page opens anywhere offline.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from pathlib import Path
from typing import Any

from .report_svg import bar_chart, histogram, table
from .store import Dataset, DatasetError, atomic_write_bytes

_CSS = ("body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
        "th{background:#f3f3f3}h2{margin-top:2em;border-bottom:1px solid #ddd}")


def _stage_folders(run_dir: Path) -> list[tuple[str, Dataset]]:
    summary = run_dir / "run_summary.json"
    order: list[str] = []
    if summary.exists():
        order = [s["stage"] for s in json.loads(summary.read_text()).get("steps", [])]
    out = []
    for p in sorted(run_dir.iterdir(), key=lambda p: (order.index(p.name) if p.name in order else 99, p.name)):
        if p.is_dir():
            try:
                out.append((p.name, Dataset(p)))
            except DatasetError:
                continue
    return out


def _cluster_sizes(ds: Dataset, column: str) -> list[int]:
    rej = ds.rejected()
    if rej is None:
        return []
    counts: Counter = Counter()
    for batch in rej.iter_batches(columns=[column]):
        counts.update(c for c in batch.column(0).to_pylist() if c)
    return [n + 1 for n in counts.values()]  # the kept row plus its removed duplicates


def build_report(run_dir: str | Path, max_rows: int = 200_000) -> dict[str, Any]:
    """Collect the report's figures (also used by tests) without rendering."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DatasetError(f"{run_dir}: no such run folder")
    stages = _stage_folders(run_dir)
    if not stages:
        raise DatasetError(f"{run_dir}: holds no stage folders (run `distill run` first)")
    funnel, drops, tokens = [], [], []
    clusters: dict[str, list[int]] = {}
    for name, ds in stages:
        m = ds.manifest() or {}
        rows_out = m.get("rows_out", ds.num_rows())
        funnel.append({"stage": name, "rows_in": m.get("rows_in"), "rows_out": rows_out,
                       "rejected": m.get("rows_rejected", 0), "complete": ds.complete})
        for reason, n in (m.get("drops") or {}).items():
            drops.append([name, reason, n])
        totals = m.get("totals", {})
        tokens.append({"stage": name, "prompt": totals.get("teacher_prompt_tokens", 0),
                       "completion": totals.get("teacher_completion_tokens", 0)})
        for col in ("minhash_cluster", "semdedup_cluster"):
            if name.startswith(col.split("_")[0]):
                clusters[name] = _cluster_sizes(ds, col)
    last = stages[-1][1]
    lengths = {"instruction": [], "output": []}
    scores: dict[str, list[float]] = {"quality": [], "complexity": [], "score": []}
    seen = 0
    for batch in last.iter_batches(columns=["instruction", "output", "quality", "complexity", "score"]):
        d = batch.to_pydict()
        for i in range(batch.num_rows):
            lengths["instruction"].append(len(d["instruction"][i] or ""))
            lengths["output"].append(len(d["output"][i] or ""))
            for k in scores:
                if d[k][i] is not None:
                    scores[k].append(d[k][i])
        seen += batch.num_rows
        if seen >= max_rows:
            break
    return {"run_dir": str(run_dir), "funnel": funnel, "drops": drops, "tokens": tokens,
            "clusters": clusters, "lengths": lengths, "scores": scores, "final_stage": stages[-1][0]}


def render_html(rep: dict[str, Any]) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>distill report</title>"
             f"<style>{_CSS}</style></head><body><h1>distill run report</h1><p>{e(rep['run_dir'])}</p>"]
    f = rep["funnel"]
    parts.append("<h2>Funnel</h2>")
    parts.append(bar_chart([s["stage"] for s in f], [s["rows_out"] or 0 for s in f], "rows out per stage"))
    parts.append(table(["stage", "rows in", "rows out", "rejected", "complete"],
                       [[s["stage"], s["rows_in"], s["rows_out"], s["rejected"], s["complete"]] for s in f]))
    parts.append("<h2>Drops by reason</h2>")
    parts.append(table(["stage", "reason", "rows"], rep["drops"]) if rep["drops"] else "<p>No drops.</p>")
    parts.append(f"<h2>Lengths ({e(rep['final_stage'])})</h2>")
    for k, v in rep["lengths"].items():
        parts.append(histogram(v, f"{k} length in characters (log scale)", log_x=True))
    parts.append("<h2>Scores</h2>")
    shown = [histogram(v, k) for k, v in rep["scores"].items() if v]
    parts.extend(shown or ["<p>No scores in the final stage.</p>"])
    parts.append("<h2>Dedup clusters</h2>")
    for stage, sizes in rep["clusters"].items():
        c = Counter(sizes)
        parts.append(bar_chart([f"size {k}" for k in sorted(c)], [c[k] for k in sorted(c)],
                               f"{stage}: clusters by size") if sizes else f"<p>{e(stage)}: no duplicate clusters.</p>")
    if not rep["clusters"]:
        parts.append("<p>No dedup stage in this run.</p>")
    t = rep["tokens"]
    parts.append("<h2>Token cost</h2>")
    parts.append(bar_chart([s["stage"] for s in t], [s["prompt"] + s["completion"] for s in t], "teacher tokens per stage"))
    parts.append(table(["stage", "prompt tokens", "completion tokens"], [[s["stage"], s["prompt"], s["completion"]] for s in t]))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    rep = build_report(run_dir)
    dest = Path(out) if out else Path(run_dir) / "report.html"
    atomic_write_bytes(dest, render_html(rep).encode("utf-8"))
    return dest
