"""Benchmark `distill minhash` against datasketch and rensa, side by side, on real-derived corpora.

    python scripts/bench_minhash.py --sizes 100000 1000000 [--peer-rows 200000] [--hash fast|datasketch]
    flock /tmp/distill-heavy.lock python scripts/bench_minhash.py --sizes 10000000 --peers none

Builds corpora (scripts/minhash_corpus.py: real rows from ../shared/data with
exact copies, case/whitespace edits, word edits, truncations and reorderings)
under --workdir, then runs each tool in its own process (so peak RSS is its
own) and prints rows/s, CPU seconds (the tool's and its worker processes'),
peak RSS, rows removed, and, where an exact ground
truth exists (sizes <= --truth-max, default 100k), removal precision and
resolved-pair recall at the threshold. The peers are run the way their
documentation shows: datasketch MinHash per row + MinHashLSH (query, then
insert when nothing matched); rensa RMinHash per row + RMinHashLSH with its
Jaccard check. Peers are slow: with --peer-rows N (--datasketch-rows N for
datasketch alone) they run on the first N rows of a larger corpus and their
rate is reported as measured on those rows (the table's rows column says so).
Ratios are ours / peer rows per second, measured in this invocation, and
the same per CPU-second (steadier on a machine shared with other work).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
WORD = re.compile(r"\w+")


def row_texts(dataset: Path, limit: int | None):
    from pipeline.store import Dataset
    n = 0
    for batch in Dataset(dataset).iter_batches(["instruction", "input", "output"], batch_size=8192):
        for i, o, p in zip(*(c.to_pylist() for c in batch.columns)):
            if limit is not None and n >= limit:
                return
            n += 1
            yield "\n".join((i or "", o or "", p or ""))


def _shingles(text: str, n: int = 5) -> list[str]:
    w = WORD.findall(text.lower())
    if len(w) < n:
        return [" ".join(w)] if w else []
    return [" ".join(w[i:i + n]) for i in range(len(w) - n + 1)]


def run_datasketch(dataset: Path, limit: int | None, threshold: float) -> list[int]:
    from datasketch import MinHash, MinHashLSH
    lsh = MinHashLSH(threshold=threshold, num_perm=128)
    removed = []
    for k, text in enumerate(row_texts(dataset, limit)):
        m = MinHash(num_perm=128)
        m.update_batch([s.encode() for s in _shingles(text)])
        if lsh.query(m):
            removed.append(k)
        else:
            lsh.insert(k, m)
    return removed


def run_rensa(dataset: Path, limit: int | None, threshold: float) -> list[int]:
    from rensa import RMinHash, RMinHashLSH
    lsh = RMinHashLSH(threshold=threshold, num_perm=128, num_bands=16)
    sigs = {}
    removed = []
    for k, text in enumerate(row_texts(dataset, limit)):
        m = RMinHash(num_perm=128, seed=42)
        m.update(_shingles(text))
        if any(m.jaccard(sigs[c]) >= threshold for c in lsh.query(m)):
            removed.append(k)
        else:
            lsh.insert(k, m)
            sigs[k] = m
    return removed


def run_ours(dataset: Path, out: Path, threshold: float, hash_mode: str, verify: str) -> tuple[list[int], dict]:
    from pipeline.stages.minhash import MinhashConfig, run_minhash
    from pipeline.store import Dataset
    shutil.rmtree(out, ignore_errors=True)
    m = run_minhash(dataset, out, MinhashConfig(threshold=threshold, hash=hash_mode, verify=verify), progress=False)
    rej = Dataset(out).rejected()
    removed = []
    if rej is not None:
        for b in rej.iter_batches(["id"]):
            removed += [int(x[1:]) for x in b.column(0).to_pylist()]
    keep = ("phase_seconds", "candidate_pairs", "verified_pairs", "candidate_rows", "peak_rss_mb", "banding")
    return removed, {k: m[k] for k in keep} | {"manifest_rows_per_second": m["rows_per_second"]}


def child(args) -> None:
    """One tool in this process; prints one JSON line."""
    t0 = time.perf_counter()
    extra: dict = {}
    if args.tool == "ours":
        removed, extra = run_ours(Path(args.dataset), Path(args.out), args.threshold, args.hash, args.verify)
    elif args.tool == "datasketch":
        removed = run_datasketch(Path(args.dataset), args.limit, args.threshold)
    else:
        removed = run_rensa(Path(args.dataset), args.limit, args.threshold)
    secs = time.perf_counter() - t0
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of the tool and its worker processes: on a shared machine the
    # wall clock depends on the neighbours, the CPU time much less.
    cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    np.save(args.removed, np.array(sorted(removed), np.int64))
    print(json.dumps({"seconds": secs, "cpu_s": cpu, "rss_mb": (me.ru_maxrss + kids.ru_maxrss) / 1024,
                      "removed": len(removed), **extra}))


def spawn(tool: str, dataset: Path, rows: int, a, workdir: Path) -> dict:
    removed = workdir / f"removed-{tool}-{rows}.npy"
    cmd = [sys.executable, __file__, "_child", tool, str(dataset), "--threshold", str(a.threshold),
           "--removed", str(removed), "--hash", a.hash, "--verify", a.verify, "--out", str(workdir / f"out-{rows}")]
    if tool != "ours":
        cmd += ["--limit", str(rows)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{tool} failed:\n{r.stderr[-3000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["rows"] = rows
    res["rows_per_s"] = rows / res["seconds"]
    res["removed_rows"] = np.load(removed)
    return res


def quality(removed: np.ndarray, truth: np.ndarray, n: int) -> dict:
    truth = truth[(truth[:, 0] < n) & (truth[:, 1] < n)] if len(truth) else truth
    has_dup = np.zeros(n, bool)
    has_dup[truth.ravel()] = True
    rem = np.zeros(n, bool)
    rem[removed[removed < n]] = True
    precision = has_dup[rem].mean() if rem.any() else 1.0
    recall = (rem[truth[:, 0]] | rem[truth[:, 1]]).mean() if len(truth) else 1.0
    return {"precision": float(precision), "recall": float(recall), "true_pairs": int(len(truth))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--peers", choices=["all", "rensa", "datasketch", "none"], default="all")
    p.add_argument("--peer-rows", type=int, default=None, help="run peers on at most this many rows of each corpus")
    p.add_argument("--datasketch-rows", type=int, default=None, help="cap for datasketch alone (it is ~20x slower)")
    p.add_argument("--truth-max", type=int, default=100_000)
    p.add_argument("--threshold", type=float, default=0.7)
    p.add_argument("--hash", choices=["fast", "datasketch"], default="fast")
    p.add_argument("--verify", choices=["exact", "estimate"], default="exact")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/distill-bench-minhash"))
    p.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    a = p.parse_args()
    import minhash_corpus
    a.workdir.mkdir(parents=True, exist_ok=True)
    peers = {"all": ["datasketch", "rensa"], "none": []}.get(a.peers, [a.peers])
    for n in a.sizes:
        ds = a.workdir / f"corpus-{n}"
        if not (ds / "_manifest.json").exists():
            t = time.perf_counter()
            info = minhash_corpus.build(n, ds, a.shared)
            print(f"built {n:,} rows in {time.perf_counter() - t:.0f}s: copies {info['copies']}", flush=True)
        truth = None
        if n <= a.truth_max:
            tf = ds / "truth.npy"
            if not tf.exists():
                np.save(tf, minhash_corpus.ground_truth(ds, a.threshold))
            truth = np.load(tf)
        res = {"ours": spawn("ours", ds, n, a, a.workdir)}
        for peer in peers:
            cap = a.datasketch_rows if peer == "datasketch" and a.datasketch_rows else a.peer_rows
            res[peer] = spawn(peer, ds, min(n, cap or n), a, a.workdir)
        print(f"\n== {n:,} rows (threshold {a.threshold}, hash {a.hash}, verify {a.verify}) ==")
        print(f"{'tool':<11}{'rows':>11}{'rows/s':>11}{'CPU s':>9}{'rows/CPU-s':>12}{'peak RSS':>11}{'removed':>10}"
              f"{'precision':>11}{'recall':>9}")
        for tool, r in res.items():
            q = quality(r["removed_rows"], truth, r["rows"]) if truth is not None else {}
            qs = f"{q['precision']:>11.4f}{q['recall']:>9.4f}" if q else f"{'-':>11}{'-':>9}"
            print(f"{tool:<11}{r['rows']:>11,}{r['rows_per_s']:>11,.0f}{r['cpu_s']:>9.1f}{r['rows'] / r['cpu_s']:>12,.0f}"
                  f"{r['rss_mb'] / 1024:>9.2f}GB{r['removed']:>10,}{qs}")
        if truth is not None:
            print(f"ground truth: {len(truth):,} pairs with exact 5-gram Jaccard >= {a.threshold}")
        print(f"machine load average during this size: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        for peer in peers:
            o, q = res["ours"], res[peer]
            print(f"ours / {peer}: {o['rows_per_s'] / q['rows_per_s']:.1f}x rows/s (wall), "
                  f"{(o['rows'] / o['cpu_s']) / (q['rows'] / q['cpu_s']):.1f}x rows per CPU-second")
        o = res["ours"]
        print(f"ours phases (s): {o['phase_seconds']}; candidate pairs {o['candidate_pairs']:,}, "
              f"verified {o['verified_pairs']:,}; RSS main/workers MB {o['peak_rss_mb']}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        c = argparse.ArgumentParser()
        c.add_argument("tool")
        c.add_argument("dataset")
        c.add_argument("--limit", type=int)
        c.add_argument("--threshold", type=float)
        c.add_argument("--removed")
        c.add_argument("--hash")
        c.add_argument("--verify")
        c.add_argument("--out")
        child(c.parse_args(sys.argv[2:]))
    else:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        main()
