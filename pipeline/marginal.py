"""The marginal-return curve: what each extra shard of generated rows added to the pool.

Reads a run folder: the dataset the first dedup stage read (its shards, in
order, are the points of the curve), the minhash and semdedup folders (kept
rows and rejected/ rows, whose `*_cluster` column names the kept row each
removed row duplicates), the score stage's rows (quality, complexity) and the
last dataset stage's ids (yield). Or a workdir of refresh nights: each
night's `refresh_summary.json` (rows generated, rows left after dedup against
the pool). Or the generating stage's own curve, which its novelty monitor
recorded in its manifest while it generated (`generation_curve`,
novelty_monitor.py). Writes nothing; `report.py` renders them and `runplan.py`
reads the last after-dedup point for the `[run] min_novelty` warning.

The two shard curves of a Self-Instruct run differ in what they count. The
generation curve counts every item the teacher wrote (also those its own
filters and ROUGE-L then dropped), and calls an item novel when no earlier
item is a MinHash near-duplicate of its instruction text: the figure the stop
acts on. The after-dedup curve counts the rows the stage kept (instances of
accepted instructions) and calls a row novel when it is the first of its
minhash/semdedup cluster over instruction, input and output. ROUGE-L has
already removed most near-duplicate instructions by then, so the after-dedup
curve stays high while the teacher repeats itself; only the first one shows
that.

Novelty of a row: it is the first row, in generation order, of its duplicate
cluster (minhash and semdedup clusters joined), and it duplicates nothing of an
`--against` pool. That does not depend on which member the keep policy kept.
Diversity is the entropy (bits) of task kinds and of origins over the novel
rows so far; embedding-cluster coverage is left out (it needs the embeddings
semdedup does not keep).

Memory: the ids of the removed rows, of the novel rows and of the last
stage's rows are held in Python sets, about 200 bytes a row: some 2 GB for a
10M-row run. `distill report` computes it for every run.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

from .errors import DatasetError
from .store import Dataset, read_json

DEDUP = ("minhash", "semdedup")
EXISTING = ("near_duplicate_existing", "semantic_duplicate_existing", "duplicate_existing")


def _dataset(path: Path) -> Dataset | None:
    try:
        return Dataset(path) if path.is_dir() else None
    except DatasetError:
        return None


def _cluster_map(ds: Dataset, column: str) -> tuple[dict[str, str], set[str]]:
    """id -> id of the kept row it duplicates (kept rows are left out), and ids that duplicate an older pool."""
    parent: dict[str, str] = {}
    existing: set[str] = set()
    for part, with_reason in ((ds, False), (ds.rejected(), True)):
        if part is None:
            continue
        for batch in part.iter_batches(columns=["id", column] + (["drop_reason"] if with_reason else [])):
            d = batch.to_pydict()
            reasons = d.get("drop_reason") or [None] * batch.num_rows
            for rid, cl, why in zip(d["id"], d.get(column) or [None] * batch.num_rows, reasons):
                if why and (why in EXISTING or str(why).endswith("_existing")):
                    existing.add(rid)
                if cl and cl != rid:  # a kept row is its own cluster: not stored, which halves the memory
                    parent[rid] = cl
    return parent, existing


def entropy(counts: Counter) -> float:
    n = sum(counts.values())
    return max(0.0, -sum(c / n * math.log2(c / n) for c in counts.values() if c)) if n else 0.0  # never -0.0


def _hard_flag(meta: str | None) -> bool | None:
    if not meta:
        return None
    try:
        h = json.loads(meta).get("hard")
    except (ValueError, AttributeError):
        return None
    return bool(h.get("hard")) if isinstance(h, dict) and "hard" in h else None


def _pieces(source: Dataset, chunk_rows: int | None):
    """(label, table) in generation order: each shard, or (`chunk_rows`) slices of that many rows."""
    cols = ["id", "origin", "task_kind", "meta"]  # the records schema has them all
    if chunk_rows is None:
        for k, loc in enumerate(source.shards):
            yield f"shard {k}", source.read_shard(loc, columns=cols)
        return
    t = source.read(columns=cols)
    for at in range(0, t.num_rows, chunk_rows):
        yield f"rows {at}-{min(at + chunk_rows, t.num_rows) - 1}", t.slice(at, chunk_rows)


def run_curve(run_dir: str | Path, chunk_rows: int | None = None) -> list[dict[str, Any]]:
    """One point per shard (or `chunk_rows` rows) of the dataset the first dedup stage read; [] when the run
    has no finished dedup stage."""
    run_dir = Path(run_dir)
    dedup = [(n, ds) for n in DEDUP if (ds := _dataset(run_dir / n)) is not None and ds.complete]
    if not dedup:
        return []
    recorded = (dedup[0][1].manifest() or {}).get("input")
    source = _dataset(Path(recorded)) if recorded else _before(run_dir, dedup[0][0])
    if source is None:
        return []
    maps = [_cluster_map(ds, f"{name}_cluster") for name, ds in dedup]
    scores: dict[str, tuple[Any, Any]] = {}
    score_ds = _dataset(run_dir / "score")
    if score_ds is not None:
        for b in score_ds.iter_batches(columns=["id", "quality", "complexity"]):
            d = b.to_pydict()
            scores.update(zip(d["id"], zip(d["quality"], d["complexity"])))
    final = _last_dataset(run_dir)
    final_ids: set[str] = set()
    if final is not None:
        for b in final.iter_batches(columns=["id"]):
            final_ids.update(b.column(0).to_pylist())
    seen_roots: set[str] = set()
    kinds: Counter = Counter()
    origins: Counter = Counter()
    points: list[dict[str, Any]] = []
    total = 0
    for label, t in _pieces(source, chunk_rows):
        d = t.to_pydict()
        n = t.num_rows
        novel = kept = 0
        q, c, hard = [], [], []
        for i, rid in enumerate(d["id"]):
            root, dup_of_pool = rid, False
            for parent, existing in maps:
                dup_of_pool = dup_of_pool or root in existing
                root = parent.get(root, root)
            if not dup_of_pool and root not in seen_roots:
                novel += 1
                kinds[(d.get("task_kind") or [None] * n)[i] or "?"] += 1
                origins[((d.get("origin") or [None] * n)[i] or "?").split(":")[0]] += 1
            seen_roots.add(root)
            if rid in final_ids:  # exact copies share their content id: the first one is the kept one
                kept += 1
                final_ids.discard(rid)
            if rid in scores:
                qq, cc = scores[rid]
                q += [qq] if qq is not None else []
                c += [cc] if cc is not None else []
            flag = _hard_flag((d.get("meta") or [None] * n)[i])
            if flag is not None:
                hard.append(flag)
        total += n
        points.append({"point": label, "generated": n, "rows_generated": total, "novel": novel,
                       "novel_per_1k": round(1000 * novel / n, 1) if n else 0.0,
                       "yield": round(kept / n, 4) if n else 0.0,
                       "entropy_task_kind": round(entropy(kinds), 3), "entropy_origin": round(entropy(origins), 3),
                       "quality": round(sum(q) / len(q), 3) if q else None,
                       "complexity": round(sum(c) / len(c), 3) if c else None,
                       "hard_share": round(sum(hard) / len(hard), 4) if hard else None})
    return points


def _before(run_dir: Path, stage: str) -> Dataset | None:
    """The step before `stage` in the run summary's order (a manifest that records no input)."""
    names = _step_names(run_dir)
    i = names.index(stage) if stage in names else 0
    for name in reversed(names[:i]):
        if (ds := _dataset(run_dir / name)) is not None:
            return ds
    return None


def _step_names(run_dir: Path) -> list[str]:
    for name, key in (("run_summary.json", "steps"), ("refresh_summary.json", "stages")):
        if (run_dir / name).is_file():
            return [s["stage"] for s in read_json(run_dir / name).get(key, []) if "stage" in s]
    return []


def _last_dataset(run_dir: Path) -> Dataset | None:
    for name in reversed(_step_names(run_dir) or ["minhash", "semdedup", "score", "select"]):
        ds = _dataset(run_dir / name)
        if ds is not None and (run_dir / name / "_manifest.json").is_file():  # export writes a release, not a dataset
            return ds
    return None


def generation_curve(run_dir: str | Path) -> list[dict[str, Any]]:
    """The novelty monitor's points of the run's generating stage (per shard: generated, novel, novel_per_1k,
    rows_generated); [] when no finished stage recorded them."""
    run_dir = Path(run_dir)
    names = _step_names(run_dir) or sorted(p.parent.name for p in run_dir.glob("*/_manifest.json"))
    for name in names:
        f = run_dir / name / "_manifest.json"
        if f.is_file() and (points := (read_json(f).get("novelty") or {}).get("points")):
            return points
    return []


def refresh_curve(workdir: str | Path) -> list[dict[str, Any]]:
    """One point per refresh night under `workdir` that generated rows (novel = rows left after dedup against the pool)."""
    nights = []
    for f in Path(workdir).glob("*/refresh_summary.json"):
        s = read_json(f)
        rows = s.get("rows") or {}
        if rows.get("generated"):
            nights.append((s.get("finished_at") or s.get("run_id") or f.parent.name, f.parent.name, rows))
    points, total = [], 0
    for _when, name, rows in sorted(nights):
        n, novel = int(rows["generated"]), int(rows.get("after_dedup") or 0)
        total += n
        points.append({"point": name, "generated": n, "rows_generated": total, "novel": novel,
                       "novel_per_1k": round(1000 * novel / n, 1),
                       "yield": round(int(rows.get("added") or 0) / n, 4)})
    return points


def fit(points: list[dict[str, Any]]) -> dict[str, float] | None:
    """Power law novel_per_1k = a * rows_generated^b, least squares in log-log over the recent half of the
    points with novel rows (at least three). A saturating pool's novelty falls faster than a power law, so a
    fit over the whole curve leans on its flat start and overstates what the next doubling adds; the recent
    slope is the one a user is about to pay for."""
    xs = [(math.log(p["rows_generated"]), math.log(p["novel_per_1k"])) for p in points
          if p["novel_per_1k"] > 0 and p["rows_generated"] > 0]
    xs = xs[-max(3, -(-len(xs) // 2)):]
    if len(xs) < 2:
        return None
    mx = sum(x for x, _ in xs) / len(xs)
    my = sum(y for _, y in xs) / len(xs)
    sxx = sum((x - mx) ** 2 for x, _ in xs)
    if sxx == 0:
        return None
    b = sum((x - mx) * (y - my) for x, y in xs) / sxx
    return {"a": math.exp(my - b * mx), "b": b}


def expected_novel(f: dict[str, float], start: float, end: float) -> float:
    """Novel rows the fitted trend expects from rows_generated = start to end (the integral of the rate / 1000)."""
    a, b = f["a"], f["b"]
    if abs(b + 1) < 1e-9:
        return a / 1000 * math.log(end / start)
    return a / 1000 * (end ** (b + 1) - start ** (b + 1)) / (b + 1)


def sentence(points: list[dict[str, Any]]) -> str:
    """One sentence on the trend and what the next doubling of rows generated is expected to add."""
    if len(points) < 2:
        return "Too few points for a trend (the curve needs at least two shards or nights)."
    first, last = points[0], points[-1]
    span = last["rows_generated"] - first["rows_generated"] + first["generated"]
    text = (f"Novel rows per 1k generated went from {first['novel_per_1k']:.0f} to {last['novel_per_1k']:.0f} "
            f"over the last {span:,} rows")
    f = fit(points)
    if f is None:
        return text + "; no trend can be fitted (no novel rows)."
    n = last["rows_generated"]
    return (text + f"; the fitted trend (novel per 1k ~ rows^{f['b']:.2f}) expects the next doubling "
            f"(to {2 * n:,} rows generated) to add about {expected_novel(f, n, 2 * n):,.0f} novel rows.")


def projection(run_dir: str | Path, targets: dict[str, int], points_wanted: int = 5) -> dict[str, Any] | None:
    """Novel rows per 1k generated that a (pilot) run's trend expects at each of `targets` (name -> rows
    generated), from its curve cut in `points_wanted` slices; None when no trend can be fitted. A generating
    stage's own curve (two points or more) is preferred: the after-dedup one misses what its filters removed."""
    pts, curve = generation_curve(run_dir), "generation"
    if len(pts) < 2:
        pts, curve = run_curve(run_dir), "after_dedup"
        total = pts[-1]["rows_generated"] if pts else 0
        if len(pts) < points_wanted and total >= 2 * points_wanted:
            pts = run_curve(run_dir, chunk_rows=-(-total // points_wanted))
    total = pts[-1]["rows_generated"] if pts else 0
    f = fit(pts)
    if f is None:
        return None
    return {"curve": curve, "pilot_rows_generated": total, "pilot_novel_per_1k": pts[-1]["novel_per_1k"],
            "exponent": round(f["b"], 3),
            "novel_per_1k_at": {name: round(min(1000.0, f["a"] * n ** f["b"]), 1) for name, n in targets.items()}}
