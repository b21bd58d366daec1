"""Benchmark embedding dedup: full MiniLM vs the fast static path, exact vs approximate search.

Everything is measured side by side in one invocation on real rows from
../shared/data (plus perturbed copies of some of them):

  embed   rows/s of the full MiniLM (cpu, or --device cuda: names the card) and of the fast path
  agree   near-duplicate pairs the full model finds at --threshold that the fast path also finds
          (recall) and how many of the fast path's pairs the full model confirms (precision),
          for a few fast-path thresholds, and for --fast --verify as the stage runs it
  search  exact (blocked matmul) vs approximate (FAISS IVF) pair search at 100k and 1M vectors,
          with the approximate recall against exact (at 1M: exact on a sample of query rows)
  stage   the whole `run_semdedup` over N synthetic rows on the fast path, with the defaults a
          user gets (embedding cache on, 1,000-row shards)

Run heavy parts under the shared lock:  flock /tmp/distill-heavy.lock python scripts/bench_semdedup.py --part all
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("DISTILL_SHARED_DATA", ROOT.parent / "shared" / "data"))

SYNONYMS = {
    "write": "compose", "explain": "describe", "list": "name", "give": "provide", "make": "create",
    "find": "identify", "tell": "say", "what": "which", "describe": "explain", "generate": "produce",
    "create": "make", "big": "large", "small": "little", "help": "assist", "use": "utilize",
    "show": "display", "good": "great", "best": "top", "important": "key", "different": "distinct",
}


def real_rows() -> list[dict]:
    """(instruction, input, output) dicts from every shared file that has them."""
    if not SHARED.is_dir():
        sys.exit(f"shared data not found at {SHARED} (set DISTILL_SHARED_DATA)")
    rows = []
    for name in ("dolly_3k.json", "alpaca_helpfulness_2k.json"):
        for r in json.loads((SHARED / name).read_text()):
            rows.append({"instruction": r["instruction"], "input": r.get("input") or "", "output": r.get("output") or ""})
    for line in (SHARED / "self_instruct_seed_tasks.jsonl").read_text().splitlines():
        r = json.loads(line)
        inst = r["instances"][0]
        rows.append({"instruction": r["instruction"], "input": inst.get("input") or "", "output": inst.get("output") or ""})
    for line in (SHARED / "wizardlm_testset_218.jsonl").read_text().splitlines():
        rows.append({"instruction": json.loads(line)["Instruction"], "input": "", "output": ""})
    for line in (SHARED / "vicuna_testset_80.jsonl").read_text().splitlines():
        rows.append({"instruction": json.loads(line)["text"], "input": "", "output": ""})
    return rows


def perturb(text: str, rng: np.random.Generator) -> str:
    """One to three small edits that keep the meaning: a typo, a dropped word, a synonym, a polite prefix."""
    words = text.split(" ")
    for _ in range(int(rng.integers(1, 4))):
        op = int(rng.integers(0, 5))
        if op == 0 and len(words) > 3:  # typo: swap two letters in a word
            k = int(rng.integers(0, len(words)))
            w = words[k]
            if len(w) > 3:
                p = int(rng.integers(0, len(w) - 1))
                words[k] = w[:p] + w[p + 1] + w[p] + w[p + 2:]
        elif op == 1 and len(words) > 6:  # drop a word
            del words[int(rng.integers(1, len(words)))]
        elif op == 2:  # synonym
            hits = [i for i, w in enumerate(words) if w.lower() in SYNONYMS]
            if hits:
                k = hits[int(rng.integers(0, len(hits)))]
                words[k] = SYNONYMS[words[k].lower()]
        elif op == 3:
            words = ["Please"] + [words[0][:1].lower() + words[0][1:]] + words[1:] if words else words
        else:  # punctuation and case
            words[-1] = words[-1].rstrip(".?!") + ("" if rng.random() < 0.5 else ".")
    return " ".join(words)


def embed_text(r: dict) -> str:
    return r["instruction"] if not r["input"] else f"{r['instruction']}\n\n{r['input']}"


def agreement_texts(seed: int = 0, frac: float = 0.3) -> list[str]:
    rng = np.random.default_rng(seed)
    base = [embed_text(r) for r in real_rows()]
    extra = [perturb(t, rng) for t in base if rng.random() < frac]
    return base + extra


def synthetic_texts(n: int, seed: int = 0, dup_frac: float = 0.02) -> list[str]:
    """n distinct task texts built from real rows: an instruction joined with two sentences of other
    rows' answers, plus perturbed copies of a few of them (planted near-duplicates)."""
    rng = np.random.default_rng(seed)
    rows = real_rows()
    inst = [r["instruction"] for r in rows]
    sents = [s.strip() for r in rows for s in r["output"].split(". ") if 20 < len(s.strip()) < 200]
    base_n = int(n * (1 - dup_frac))
    a = rng.integers(0, len(inst), base_n)
    b = rng.integers(0, len(sents), base_n)
    c = rng.integers(0, len(sents), base_n)
    texts = [f"{inst[i]} {sents[j]} {sents[k]}" for i, j, k in zip(a.tolist(), b.tolist(), c.tolist())]
    picks = rng.integers(0, base_n, n - base_n)
    texts += [perturb(texts[p], rng) for p in picks.tolist()]
    return texts


def timed(fn, *a, **kw):
    t0 = time.perf_counter()
    r = fn(*a, **kw)
    return r, time.perf_counter() - t0


def part_embed(args) -> dict:
    from pipeline.embeddings.embedder import load_embedder
    texts = agreement_texts()
    fast = load_embedder(fast=True)
    fast_texts = (texts * (args.fast_rows // len(texts) + 1))[: args.fast_rows]
    fast.encode(fast_texts[:2000])  # warm-up
    _, dt_fast = timed(fast.encode, fast_texts)
    full = load_embedder(device=args.device, batch_size=args.batch_size)
    full_texts = texts[: args.full_rows]
    full.encode(full_texts[:64])  # warm-up
    full.batch_size = args.batch_size  # let the tuner see the real input (None -> tuned)
    _, dt_full = timed(full.encode, full_texts)
    card = None
    if full.device.startswith("cuda"):
        import torch
        card = torch.cuda.get_device_name(0)
    res = {"full_model": full.name, "full_device": full.device, "card": card, "full_batch_size": full.batch_size, "full_batch_size_trials_chars_per_s": full.tuning,
           "full_rows": len(full_texts), "full_rows_per_s": round(len(full_texts) / dt_full, 1),
           "fast_model": fast.name, "fast_rows": len(fast_texts), "fast_rows_per_s": round(len(fast_texts) / dt_fast, 1)}
    res["fast_vs_full_speedup"] = round(res["fast_rows_per_s"] / res["full_rows_per_s"], 1)
    return res


def part_agree(args) -> dict:
    """Pairs of the full model at the threshold vs the fast path's pairs, on real rows + perturbed copies."""
    from pipeline.embeddings.embedder import load_embedder
    from pipeline.stages.semdedup.search import exact_pairs
    texts = agreement_texts()[: args.agree_rows]
    full = load_embedder(device=args.device, batch_size=args.batch_size)
    fast = load_embedder(fast=True)
    v, w = full.encode(texts), fast.encode(texts)
    truth = exact_pairs(v, args.threshold).as_set()
    rows = {"rows": len(texts), "threshold": args.threshold, "full_pairs": len(truth), "fast": []}
    for cut in (args.threshold - 0.12, args.threshold - 0.06, args.threshold - 0.03, args.threshold):
        found = exact_pairs(w, cut).as_set()
        both = len(found & truth)
        involved = len({r for p in found for r in p})
        rows["fast"].append({"fast_threshold": round(cut, 3), "fast_pairs": len(found),
                             "recall_of_full_pairs": round(both / max(len(truth), 1), 4),
                             "precision_vs_full": round(both / max(len(found), 1), 4),
                             "rows_a_verify_would_embed": involved})
    # --fast --verify as the stage runs it: candidates at its default cut, kept when the full model agrees.
    from pipeline.stages.semdedup.config import SemdedupConfig
    from pipeline.stages.semdedup.search import exact_sims
    cut = SemdedupConfig(fast=True, verify=True, threshold=args.threshold).search_threshold()
    cand = exact_pairs(w, cut)
    ok = exact_sims(v[cand.i], v[cand.j]) >= args.threshold
    confirmed = set(zip(cand.i[ok].tolist(), cand.j[ok].tolist()))
    rows["fast_verify"] = {"candidate_threshold": cut, "candidate_pairs": len(cand), "confirmed_pairs": len(confirmed),
                           "recall_of_full_pairs": round(len(confirmed & truth) / max(len(truth), 1), 4),
                           "precision_vs_full": round(len(confirmed & truth) / max(len(confirmed), 1), 4),
                           "rows_the_full_model_embeds": int(len(np.unique(np.concatenate([cand.i, cand.j])))),
                           "of_rows": len(texts)}
    return rows


def part_search(args) -> dict:
    """Exact vs IVF pair search at each size; exact at the largest size on a sample of query rows."""
    from pipeline.embeddings.embedder import load_embedder
    from pipeline.stages.semdedup.search import exact_pairs, ivf_pairs, kmeans_pairs, pair_recall
    fast = load_embedder(fast=True)
    thr = args.threshold - 0.03  # the fast path's default cut: what a CPU run at this scale searches with
    out = {"vectors_from": fast.name, "threshold": thr, "sizes": []}
    for n in args.search_sizes:
        texts = synthetic_texts(n, seed=n)
        x, dt_embed = timed(fast.encode, texts)
        del texts
        res = {"n": n, "embed_s": round(dt_embed, 1)}
        print(f"# n={n}: embedded in {dt_embed:.1f}s", file=sys.stderr, flush=True)
        approx, dt_ivf = timed(ivf_pairs, x, thr, nprobe=args.nprobe)
        res.update(ivf_s=round(dt_ivf, 1), ivf_pairs=len(approx), nprobe=args.nprobe)
        if args.kmeans:
            km, dt_km = timed(kmeans_pairs, x, thr)
            res.update(kmeans_s=round(dt_km, 1), kmeans_pairs=len(km))
        if n <= args.exact_max:
            truth, dt_exact = timed(exact_pairs, x, thr)
            res.update(exact_s=round(dt_exact, 1), exact_pairs=len(truth), ivf_recall=round(pair_recall(approx, truth), 4))
            # The peer: FAISS's own IndexIVFFlat range search, same cells and nprobe.
            peer, dt_peer = timed(faiss_ivf_range_pairs, x, thr, args.nprobe)
            res.update(faiss_ivfflat_range_s=round(dt_peer, 1), faiss_ivfflat_recall=round(pair_recall(peer, truth), 4),
                       ours_vs_faiss_ivfflat_speedup=round(dt_peer / dt_ivf, 1))
            if args.kmeans:
                res["kmeans_recall"] = round(pair_recall(km, truth), 4)
        else:
            # Exact truth for a sample of query rows (all their partners among all n rows).
            rng = np.random.default_rng(0)
            q = np.sort(rng.choice(n, args.sample_queries, replace=False))
            t0 = time.perf_counter()
            ii, jj = [], []
            for a in range(0, len(q), 2048):
                s = x[q[a:a + 2048]] @ x.T
                r, c = np.nonzero(s >= thr)
                ii.append(q[a:a + 2048][r]); jj.append(c)
            dt = time.perf_counter() - t0
            i, j = np.concatenate(ii), np.concatenate(jj)
            keep = i != j
            truth = {(int(min(a, b)), int(max(a, b))) for a, b in zip(i[keep], j[keep])}
            qs = set(q.tolist())
            found = {p for p in approx.as_set() if p[0] in qs or p[1] in qs}
            res.update(exact_sample_queries=len(q), exact_sample_pairs=len(truth),
                       ivf_recall_on_sample=round(len(found & truth) / max(len(truth), 1), 4),
                       exact_s_estimated=round(dt * (n / 2) / len(q), 0))
        out["sizes"].append(res)
        print(json.dumps({"search_size": res}), flush=True)
    return out


def faiss_ivf_range_pairs(x: np.ndarray, thr: float, nprobe: int):
    """IndexIVFFlat.range_search of every row: what ivf_pairs replaces (for the side-by-side)."""
    import faiss

    from pipeline.stages.semdedup.search import MARGIN, _finish, _train_sample, default_nlist
    nlist = default_nlist(len(x))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(x.shape[1]), x.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = 10
    index.train(_train_sample(x, nlist * 40))
    index.add(x)
    index.nprobe = nprobe
    ii, jj = [], []
    for a in range(0, len(x), 20_000):
        lims, _, found = index.range_search(x[a:a + 20_000], thr - MARGIN)
        rows = np.repeat(np.arange(a, a + len(lims) - 1), np.diff(lims).astype(np.int64))
        ii.append(rows[found > rows]); jj.append(found[found > rows])
    return _finish(x, np.concatenate(ii), np.concatenate(jj), thr)


def synthetic_dataset(path: Path, n: int, shard_rows: int = 50_000) -> Path:
    import pyarrow as pa

    from pipeline import records
    from pipeline.store import DatasetWriter
    texts = synthetic_texts(n, seed=7)
    w = DatasetWriter(path, "import")
    for k in range(0, n, shard_rows):
        chunk = texts[k:k + shard_rows]
        ids = [records.make_id(t) for t in chunk]
        t = pa.table({"id": ids, "instruction": chunk, "input": [""] * len(chunk),
                      "output": [f"answer {i}" for i in range(k, k + len(chunk))], "origin": ["import"] * len(chunk)})
        w.write_shard(k // shard_rows, records.conform(t))
    w.write_manifest()
    return path


def part_stage(args) -> dict:
    import shutil
    import tempfile

    from pipeline.stages.semdedup import run_semdedup
    from pipeline.stages.semdedup.config import SemdedupConfig
    tmp = Path(tempfile.mkdtemp(prefix="bench-semdedup-"))
    try:
        _, dt_make = timed(synthetic_dataset, tmp / "in", args.stage_rows)
        # The defaults a user gets: embedding cache on, the run's 1,000-row shards.
        cfg = SemdedupConfig(fast=True, cache=not args.stage_no_cache, nprobe=args.nprobe)
        m, dt = timed(run_semdedup, tmp / "in", tmp / "out", cfg, workdir=tmp, shard_rows=args.stage_shard_rows,
                      progress=False)
        return {"rows": args.stage_rows, "shard_rows": args.stage_shard_rows, "cache": cfg.cache,
                "make_input_s": round(dt_make, 1), "stage_s": round(dt, 1),
                "rows_out": m["rows_out"], "dropped": m["rows_rejected"], "embed": m["embed"], "search": m["search"],
                "timings": m["timings"]}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["embed", "agree", "search", "stage", "all"], default="all")
    ap.add_argument("--device", default="cpu", help="device of the full model: cpu, cuda (reports the card), auto")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--threshold", type=float, default=0.95)
    ap.add_argument("--full-rows", type=int, default=1000, help="rows the full model embeds in the embed part")
    ap.add_argument("--fast-rows", type=int, default=50_000)
    ap.add_argument("--agree-rows", type=int, default=100_000, help="cap on the agreement rows (all ~7.2k by default)")
    ap.add_argument("--search-sizes", type=lambda s: [int(v) for v in s.split(",")], default=[100_000, 1_000_000])
    ap.add_argument("--exact-max", type=int, default=150_000, help="largest size searched fully exactly")
    ap.add_argument("--sample-queries", type=int, default=10_000)
    ap.add_argument("--nprobe", type=int, default=12)
    ap.add_argument("--kmeans", action="store_true", help="also time and score the SemDeDup k-means mode")
    ap.add_argument("--stage-rows", type=int, default=1_000_000)
    ap.add_argument("--stage-shard-rows", type=int, default=1000, help="the stage's shard size (the run default)")
    ap.add_argument("--stage-no-cache", action="store_true", help="run the stage without the embedding cache")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    parts = ["embed", "agree", "search", "stage"] if args.part == "all" else [args.part]
    results = {}
    for p in parts:
        t0 = time.perf_counter()
        results[p] = globals()[f"part_{p}"](args)
        results[p]["part_wall_s"] = round(time.perf_counter() - t0, 1)
        print(json.dumps({p: results[p]}, indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
