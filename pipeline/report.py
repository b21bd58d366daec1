"""`distill report`: one self-contained HTML page about a run or a release.

Reads a run folder (`<workdir>/<run-id>/`): each stage's `_manifest.json`, the
run summary, the last stage's rows (lengths, scores), the evolution stage's
rows (depth, operation mix) and the dedup stages' rejected rows (cluster
sizes). Or a release (an export folder with `manifest.json`, a published
version, or a releases folder whose `latest` is followed): its Parquet shards
and the stage chain its manifest records. Writes `report.html`: the per-stage
funnel, drops by reason, cut-off answers per answering stage, length (reasoning traces' too) and score distributions, evolution depth and
operations, dedup cluster sizes and token cost, and the cost projection when
the folder holds one (`projection.json`, written by `distill plan` into its
pilot folder), and the marginal-return curve (marginal.py: per shard of the
dedup stage's input and, for a refresh, per night of its workdir). Charts are inline SVG, so the page opens anywhere offline.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from . import marginal
from .costtable import table as projection_table
from .errors import DatasetError
from .report_svg import bar_chart, histogram, line_chart, table
from .store import Dataset, atomic_write_bytes, read_json

_CSS = ("body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
        "th{background:#f3f3f3}h2{margin-top:2em;border-bottom:1px solid #ddd}")


def _stage_folders(run_dir: Path) -> list[tuple[str, Dataset]]:
    order: list[str] = []
    for name, key in (("run_summary.json", "steps"), ("refresh_summary.json", "stages")):  # distill run / refresh
        summary = run_dir / name
        if summary.exists():
            order = [s["stage"] for s in json.loads(summary.read_text()).get(key, []) if "stage" in s]
            break
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


def _is_release(path: Path) -> bool:
    return (path / "manifest.json").is_file() and not (path / "_manifest.json").exists()


def resolve_target(path: str | Path) -> Path:
    """A run folder, a release folder, or a releases folder (its `latest` is followed)."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"{path}: no such run or release folder")
    if (path / "latest").exists() and not any((path / f).exists() for f in ("run_summary.json", "refresh_summary.json")):
        return (path / "latest").resolve()
    return path


def _evolution(ds: Dataset | None, max_rows: int) -> dict[str, dict[str, int]]:
    depth: Counter = Counter()
    ops: Counter = Counter()
    if ds is None:
        return {"depth": {}, "operations": {}}
    seen = 0
    for batch in ds.iter_batches(columns=["origin", "round"]):
        d = batch.to_pydict()
        for origin, rnd in zip(d["origin"], d["round"]):
            depth[int(rnd or 0)] += 1
            if origin and origin.startswith("evol:"):
                ops[origin.split(":", 1)[1]] += 1
        seen += batch.num_rows
        if seen >= max_rows:
            break
    return {"depth": {str(k): depth[k] for k in sorted(depth)}, "operations": dict(ops.most_common())}


def _row_figures(batches, max_rows: int) -> tuple[dict[str, list[int]], dict[str, list[float]]]:
    lengths: dict[str, list[int]] = {"instruction": [], "output": [], "reasoning": []}
    scores: dict[str, list[float]] = {"quality": [], "complexity": [], "score": []}
    seen = 0
    for batch in batches:
        d = batch.to_pydict()
        for i in range(batch.num_rows):
            for k in lengths:
                if k in d and (k != "reasoning" or d[k][i] is not None):  # reasoning: the rows that have one
                    lengths[k].append(len(d[k][i] or ""))
            for k in scores:
                if k in d and d[k][i] is not None:
                    scores[k].append(d[k][i])
        seen += batch.num_rows
        if seen >= max_rows:
            break
    if not lengths["reasoning"]:
        del lengths["reasoning"]
    return lengths, scores


def build_report(run_dir: str | Path, max_rows: int = 200_000) -> dict[str, Any]:
    """Collect the report's figures (also used by tests) without rendering."""
    run_dir = resolve_target(run_dir)
    if _is_release(run_dir):
        return _release_report(run_dir, max_rows)
    stages = _stage_folders(run_dir)
    if not stages:
        raise DatasetError(f"{run_dir}: holds no stage folders (run `distill run` first)")
    funnel, drops, tokens, cut = [], [], [], []
    clusters: dict[str, list[int]] = {}
    for name, ds in stages:
        m = ds.manifest() or {}
        if m.get("truncation"):
            cut.append({"stage": name, **m["truncation"]})
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
    lengths, scores = _row_figures(last.iter_batches(columns=["instruction", "output", "reasoning", "quality", "complexity",
                                                                    "score"]),
                                   max_rows)
    evol = dict(stages).get("evol_instruct")
    return {"kind": "run", "run_dir": str(run_dir), "funnel": funnel, "drops": drops, "tokens": tokens,
            "clusters": clusters, "lengths": lengths, "scores": scores, "final_stage": stages[-1][0],
            "evolution": _evolution(evol, max_rows), "truncation": cut, "marginal": _marginal(run_dir),
            "projection": read_json(run_dir / "projection.json") if (run_dir / "projection.json").is_file() else None}


def _marginal(run_dir: Path) -> dict[str, Any]:
    shards = marginal.run_curve(run_dir)
    made = marginal.generation_curve(run_dir)
    nights = marginal.refresh_curve(run_dir.parent) if (run_dir / "refresh_summary.json").is_file() else []
    summary = read_json(run_dir / "run_summary.json") if (run_dir / "run_summary.json").is_file() else {}
    return {"shards": shards, "shards_sentence": marginal.sentence(shards) if shards else "",
            "stopped": summary.get("stopped"), "warning": summary.get("novelty_warning"),
            "generation": made, "generation_sentence": marginal.sentence(made) if made else "",
            "nights": nights, "nights_sentence": marginal.sentence(nights) if nights else ""}


def _release_report(path: Path, max_rows: int) -> dict[str, Any]:
    m = read_json(path / "manifest.json")
    funnel, drops, cut = [], [], []
    for st in m.get("upstream", []):
        if st.get("truncation"):
            cut.append({"stage": st.get("stage"), **st["truncation"]})
        funnel.append({"stage": st.get("stage"), "rows_in": st.get("rows_in"), "rows_out": st.get("rows_out"),
                       "rejected": st.get("rows_rejected", 0), "complete": True})
        drops += [[st.get("stage"), reason, n] for reason, n in (st.get("drops") or {}).items()]
    funnel.append({"stage": "release", "rows_in": m.get("rows_in"), "rows_out": m.get("rows"),
                   "rejected": 0, "complete": True})
    files = [path / f["path"] for f in m.get("files", [])]
    for f in files:
        if not f.is_file():
            raise DatasetError(f"{path}: the manifest lists {f.name}, which is missing (a damaged release)")

    def batches(columns):
        for f in files:
            pf = pq.ParquetFile(f)
            cols = [c for c in columns if c in pf.schema_arrow.names]
            if cols:
                yield from pf.iter_batches(columns=cols)

    lengths, scores = _row_figures(batches(["instruction", "output", "reasoning", "quality", "complexity", "score"]), max_rows)
    depth: Counter = Counter()
    ops: Counter = Counter()
    for b in batches(["origin", "round"]):
        d = b.to_pydict()
        for origin in d.get("origin", []):
            if origin and origin.startswith("evol:"):
                ops[origin.split(":", 1)[1]] += 1
        for rnd in d.get("round", []):
            depth[int(rnd or 0)] += 1
    return {"kind": "release", "run_dir": str(path), "funnel": funnel, "drops": drops, "tokens": [], "truncation": cut,
            "clusters": {}, "lengths": lengths, "scores": scores, "final_stage": "release",
            "evolution": {"depth": {str(k): depth[k] for k in sorted(depth)}, "operations": dict(ops.most_common())}}


def render_html(rep: dict[str, Any]) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>distill report</title>"
             f"<style>{_CSS}</style></head><body><h1>distill {e(rep.get('kind', 'run'))} report</h1><p>{e(rep['run_dir'])}</p>"]
    f = rep["funnel"]
    parts.append("<h2>Funnel</h2>")
    parts.append(bar_chart([s["stage"] for s in f], [s["rows_out"] or 0 for s in f], "rows out per stage"))
    parts.append(table(["stage", "rows in", "rows out", "rejected", "complete"],
                       [[s["stage"], s["rows_in"], s["rows_out"], s["rejected"], s["complete"]] for s in f]))
    parts.append("<h2>Drops by reason</h2>")
    parts.append(table(["stage", "reason", "rows"], rep["drops"]) if rep["drops"] else "<p>No drops.</p>")
    parts.append("<h2>Cut-off answers</h2>")
    cut = rep.get("truncation") or []
    parts.append(table(["stage", "answers", "cut off at first", "retried", "still cut off", "rate", "rate after retry"],
                       [[t["stage"], t["answers"], t["truncated_first"], t["retried"], t["still_truncated"],
                         f"{t['rate']:.1%}", f"{t['rate_after_retry']:.1%}"] for t in cut])
                 if cut else "<p>No stage in this run counted cut-off answers.</p>")
    parts.append(f"<h2>Lengths ({e(rep['final_stage'])})</h2>")
    for k, v in rep["lengths"].items():
        parts.append(histogram(v, f"{k} length in characters (log scale)", log_x=True))
    if rep["lengths"].get("reasoning"):
        r = rep["lengths"]["reasoning"]
        parts.append(f"<p>Reasoning traces (the <code>reasoning</code> column): {len(r)} rows, "
                     f"{sum(r) / len(r):.0f} characters on average, {max(r)} at most.</p>")
    parts.append("<h2>Scores</h2>")
    shown = [histogram(v, k) for k, v in rep["scores"].items() if v]
    parts.extend(shown or ["<p>No scores in the final stage.</p>"])
    parts.append("<h2>Evolution</h2>")
    ev = rep.get("evolution") or {}
    if ev.get("depth"):
        parts.append(bar_chart([f"round {k}" for k in ev["depth"]], list(ev["depth"].values()), "rows by evolution depth"))
    if ev.get("operations"):
        parts.append(bar_chart(list(ev["operations"]), list(ev["operations"].values()), "evolutions by operation"))
    if not ev.get("depth") and not ev.get("operations"):
        parts.append("<p>No evolution stage in this run.</p>")
    parts.append("<h2>Dedup clusters</h2>")
    for stage, sizes in rep["clusters"].items():
        c = Counter(sizes)
        parts.append(bar_chart([f"size {k}" for k in sorted(c)], [c[k] for k in sorted(c)],
                               f"{stage}: clusters by size") if sizes else f"<p>{e(stage)}: no duplicate clusters.</p>")
    if not rep["clusters"]:
        parts.append("<p>No dedup stage in this run.</p>")
    t = rep["tokens"]
    parts.append("<h2>Token cost</h2>")
    if not t:
        parts.append("<p>Token usage is recorded per run; report on the run folder to see it.</p>")
        t = [{"stage": "-", "prompt": 0, "completion": 0}]
    parts.append(bar_chart([s["stage"] for s in t], [s["prompt"] + s["completion"] for s in t], "teacher tokens per stage"))
    parts.append(table(["stage", "prompt tokens", "completion tokens"], [[s["stage"], s["prompt"], s["completion"]] for s in t]))
    parts.extend(_render_marginal(rep.get("marginal") or {}))
    if rep.get("projection"):
        parts.append("<h2>Cost projection</h2>")
        parts.append(f"<pre>{e(projection_table(rep['projection']))}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


_CURVES = [("novel_per_1k", "novel rows per 1k generated"), ("yield", "yield (kept / generated)"),
           ("entropy_task_kind", "diversity: entropy of task kinds (bits, novel rows so far)"),
           ("entropy_origin", "diversity: entropy of origins (bits, novel rows so far)"),
           ("quality", "mean quality score"), ("complexity", "mean complexity score"), ("hard_share", "hard share")]


def _render_marginal(m: dict[str, Any]) -> list[str]:
    parts = ["<h2 id='marginal'>Marginal return</h2>"]
    if m.get("stopped"):
        parts.append(f"<p class='marginal-stop'><strong>This run stopped generating</strong>: "
                     f"{html.escape(m['stopped']['message'])}; the later steps ran on what it had.</p>")
    if m.get("warning"):
        parts.append(f"<p class='marginal-stop'><strong>Novelty under [run] min_novelty after "
                     f"{html.escape(m['warning']['after'])}</strong>: {html.escape(m['warning']['message'])}.</p>")
    for key, what in (("generation", "per shard of the teacher's generation (the novelty monitor: every item the "
                                     "teacher wrote; the figure [run] min_novelty stops on)"),
                      ("shards", "per shard of generated rows (the first dedup stage's input)"),
                      ("nights", "per refresh night of this workdir")):
        pts = m.get(key) or []
        if not pts:
            continue
        parts.append(f"<h3>{html.escape(what.capitalize())}</h3><p class='marginal-trend'>"
                     f"{html.escape(m.get(key + '_sentence', ''))}</p>")
        xs = [p["rows_generated"] for p in pts]
        for col, title in _CURVES:
            if any(p.get(col) is not None for p in pts):
                parts.append(line_chart(xs, [p.get(col) for p in pts], title))
        cols = [c for c, _ in _CURVES if any(p.get(c) is not None for p in pts)]
        parts.append(table(["point", "generated", "rows generated", "novel", *cols],
                           [[p["point"], p["generated"], p["rows_generated"], p["novel"], *[p.get(c) for c in cols]]
                            for p in pts]))
    if not m.get("shards") and not m.get("nights") and not m.get("generation"):
        parts.append("<p>No dedup stage has finished in this run, so there is no curve yet.</p>")
    else:
        parts.append("<p>Novelty: rows that are the first of their MinHash/semdedup duplicate cluster in generation "
                     "order. Embedding-cluster coverage is not shown (semdedup keeps no embeddings).</p>")
        if m.get("generation"):
            parts.append("<p>The teacher's generation curve counts every item the teacher wrote, also those the "
                         "stage's own filters (ROUGE-L) then dropped, and calls one novel when no earlier item is a "
                         "MinHash near-duplicate of its instruction; the after-dedup curve counts only the rows the "
                         "stage kept, so it stays high while the teacher repeats itself.</p>")
    return parts


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    rep = build_report(run_dir)
    if out:
        dest = Path(out)
    elif rep["kind"] == "release":  # a published version is immutable: write beside, not into it
        dest = Path.cwd() / f"report-{Path(rep['run_dir']).name}.html"
    else:
        dest = Path(rep["run_dir"]) / "report.html"
    atomic_write_bytes(dest, render_html(rep).encode("utf-8"))
    return dest
