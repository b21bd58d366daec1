"""Benchmark: the Self-Instruct ROUGE-L novelty filter vs the straightforward rouge-score loop.

The pool starts as the paper's 175 seed tasks and grows, one candidate at a
time exactly as the stage does it, from real instructions in ../shared/data
(Dolly, Alpaca, WizardLM, Vicuna) followed by recombinations of them, with
perturbed copies (a word dropped, doubled or swapped, case and punctuation
changed) mixed in so that a share is rejected.

Side by side at the 5,000 pool, on the same candidates:
  ours       RougeIndex: decisions (prefix filter + bit-parallel LCS), and
             decisions + the top-10 / mean metadata the stage stores
  baseline   for every pool item scorer.score(candidate, item) (the original
             Self-Instruct loop), and the Alpaca variant that pre-tokenises the
             pool and calls rouge_scorer._score_lcs
Decisions and max scores are compared candidate by candidate. The baseline is
too slow to run for whole builds, so its build time is extrapolated from its
measured per-pair time and the pool size at each candidate (said so in the output).

    flock /tmp/distill-heavy.lock python scripts/bench_self_instruct.py [--sizes 5000,50000]

`--utilisation` benchmarks the stage's scheduling instead: the whole stage
(openai backend, response cache, ROUGE-L filter, shards) against the loopback
stand-in teacher tests/self_instruct_server.py, run as a separate process,
answering every request after `--latency` seconds with `--concurrency`
connections. It prints the requests in flight averaged over each run (the
stand-in integrates the number in flight over time) as a share of the
concurrency, for schedule = "window" and schedule = "paper" side by side, at
each size:

    python scripts/bench_self_instruct.py --utilisation [--sizes 1000,10000] [--paper-sizes 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.stages.self_instruct.rouge import RougeIndex  # noqa: E402


def load_real(root: Path) -> tuple[list[str], list[str]]:
    seeds = [json.loads(line)["instruction"] for line in open(root / "self_instruct_seed_tasks.jsonl")]
    texts = [r["instruction"] for r in json.loads((root / "dolly_3k.json").read_text())]
    texts += [r["instruction"] for r in json.loads((root / "alpaca_helpfulness_2k.json").read_text())]
    texts += [json.loads(line)["Instruction"] for line in open(root / "wizardlm_testset_218.jsonl")]
    texts += [json.loads(line)["text"] for line in open(root / "vicuna_testset_80.jsonl")]
    return seeds, list(dict.fromkeys(t for t in texts if t.strip()))


def perturb(text: str, rng: random.Random) -> str:
    words = text.split()
    op = rng.randrange(4)
    if op == 0 and len(words) > 3:
        del words[rng.randrange(len(words))]
    elif op == 1 and words:
        i = rng.randrange(len(words))
        words.insert(i, words[i])
    elif op == 2 and len(words) > 1:
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    else:
        return text.lower().replace(",", " ,") + "?"
    return " ".join(words)


def stream(real: list[str], rng: random.Random):
    """Real instructions first, then recombinations; a perturbed copy of an earlier one 1 time in 4."""
    seen: list[str] = []
    order = real[:]
    rng.shuffle(order)
    while True:
        if seen and rng.random() < 0.25:
            yield perturb(rng.choice(seen), rng)
            continue
        if order:
            text = order.pop()
        else:
            a, b = rng.choice(real).split(), rng.choice(real).split()
            text = " ".join(a[: max(1, len(a) // 2)] + b[len(b) // 2:])
        seen.append(text)
        yield text


def baseline(cand: str, pool: list[str], scorer) -> tuple[bool, float]:
    best = max(scorer.score(cand, p)["rougeL"].fmeasure for p in pool)
    return best > 0.7, best


def baseline_pretok(cand: str, pool_tokens: list[list[str]], scorer, rs) -> tuple[bool, float]:
    ct = scorer._tokenizer.tokenize(cand)
    best = max(rs._score_lcs(ct, pt).fmeasure for pt in pool_tokens)
    return best > 0.7, best


def side_by_side(idx: RougeIndex, cands: list[str], args) -> dict:
    from rouge_score import rouge_scorer as rs
    scorer = rs.RougeScorer(["rougeL"], use_stemmer=False)
    pool = list(idx.texts)
    t = time.perf_counter()
    ours = [idx.most_similar(c) for c in cands]
    t_dec = (time.perf_counter() - t) / len(cands)
    t = time.perf_counter()
    for c in cands:
        idx.most_similar(c)
        idx.top_k(c, 10)
    t_meta = (time.perf_counter() - t) / len(cands)
    t = time.perf_counter()
    base = [baseline(c, pool, scorer) for c in cands]
    t_base = (time.perf_counter() - t) / len(cands)
    n_pre = max(1, len(cands) // 2)
    pool_tokens = [scorer._tokenizer.tokenize(p) for p in pool]   # once, outside the timing (as Alpaca does)
    t = time.perf_counter()
    pre = [baseline_pretok(c, pool_tokens, scorer, rs) for c in cands[:n_pre]]
    t_pre = (time.perf_counter() - t) / n_pre
    same = all((o is not None) == b[0] and (o is None or o.score == b[1]) for o, b in zip(ours, base))
    same = same and all(p == b for p, b in zip(pre, base))
    return {"pool": len(pool), "candidates": len(cands), "rejected": sum(b[0] for b in base),
            "identical": same, "ours_decision_ms": t_dec * 1e3, "ours_with_meta_ms": t_meta * 1e3,
            "rouge_score_ms": t_base * 1e3, "pretokenised_ms": t_pre * 1e3,
            "per_pair_us": t_base / len(pool) * 1e6, "per_pair_pretok_us": t_pre / len(pool) * 1e6}


def run_stage(base_url: str, schedule: str, size: int, concurrency: int) -> dict:
    """One Self-Instruct run of `size` instructions against the stand-in; the stand-in's counters of it."""
    from pipeline.config import TeacherSection
    from pipeline.context import RunContext
    from pipeline.stages.self_instruct import SelfInstructConfig, run_self_instruct
    from pipeline.teacher.factory import TeacherFactory
    get = lambda what: json.loads(urllib.request.urlopen(base_url + "/" + what).read())  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="bench-si-") as tmp:
        sec = TeacherSection(backend="openai", base_url=base_url, model="standin-model", concurrency=concurrency,
                             cache_path=str(Path(tmp) / "cache.sqlite"))
        ctx = RunContext(run_id="bench", workdir=Path(tmp), teacher_factory=TeacherFactory(sec, Path(tmp), 0).build,
                         progress=False)
        get("reset")
        t = time.monotonic()
        try:
            m = run_self_instruct(Path(tmp) / "out", ctx, SelfInstructConfig(num_instructions=size, schedule=schedule))
        finally:
            ctx.close()
        wall = time.monotonic() - t
        st = get("reset")
    span = st["last"] - st["first"]
    return {"schedule": schedule, "size": size, "accepted": m["accepted_instructions"], "requests": st["requests"],
            "wall_s": wall, "in_flight": st["busy"] / span, "share": st["busy"] / span / concurrency,
            "peak": st["peak"]}


def utilisation(args) -> None:
    server = subprocess.Popen([sys.executable, str(Path(__file__).resolve().parents[1] / "tests" / "self_instruct_server.py"),
                               "--latency", str(args.latency)], stdout=subprocess.PIPE, text=True)
    try:
        base_url = f"http://127.0.0.1:{server.stdout.readline().strip()}/v1"
        print(f"stand-in teacher {base_url}: every answer after {args.latency:g} s; concurrency {args.concurrency}")
        print(f"{'schedule':>8} {'target':>7} {'accepted':>8} {'requests':>8} {'wall s':>7} {'in flight':>9} "
              f"{'share':>6} {'peak':>5}")
        run_stage(base_url, "window", 20, args.concurrency)   # imports and the ROUGE-L kernels' load, untimed
        paper = {int(x) for x in args.paper_sizes.split(",")} if args.paper_sizes else None
        results = []
        for size in (int(x) for x in args.sizes.split(",")):
            for schedule in ("window", "paper"):
                if schedule == "paper" and paper is not None and size not in paper:
                    continue
                r = run_stage(base_url, schedule, size, args.concurrency)
                results.append(r)
                print(f"{r['schedule']:>8} {r['size']:>7,} {r['accepted']:>8,} {r['requests']:>8,} {r['wall_s']:>7.1f} "
                      f"{r['in_flight']:>9.1f} {r['share']:>6.3f} {r['peak']:>5}", flush=True)
        for size in sorted({r["size"] for r in results}):
            got = {r["schedule"]: r for r in results if r["size"] == size}
            if len(got) == 2:
                w, p = got["window"], got["paper"]
                print(f"at {size:,}: window keeps {w['share']:.3f} of the concurrency busy, paper {p['share']:.3f} "
                      f"(x{w['share'] / p['share']:.2f}); wall time x{p['wall_s'] / w['wall_s']:.2f} shorter")
    finally:
        server.terminate()
        server.wait(10)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--utilisation", action="store_true", help="benchmark the schedules instead (see above)")
    ap.add_argument("--latency", type=float, default=0.5, help="--utilisation: the stand-in's seconds per answer")
    ap.add_argument("--concurrency", type=int, default=64, help="--utilisation: teacher.concurrency")
    ap.add_argument("--paper-sizes", default=None, help="--utilisation: sizes the paper schedule runs at (default: all)")
    ap.add_argument("--data", default=os.environ.get("DISTILL_SHARED_DATA",
                                                    str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--sizes", default="5000,50000", help="machine-pool sizes to build to")
    ap.add_argument("--sample", type=int, default=20, help="candidates timed side by side at the first size")
    ap.add_argument("--sample-large", type=int, default=4, help="candidates checked against rouge-score at the last size")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.utilisation:
        if args.sizes == "5000,50000":
            args.sizes = "1000,10000"
        return utilisation(args)
    sizes = [int(s) for s in args.sizes.split(",")]
    seeds, real = load_real(Path(args.data))
    rng = random.Random(args.seed)
    gen = stream(real, rng)
    idx = RougeIndex(0.7)
    for s in seeds:
        idx.add(s)
    idx.most_similar("warm up the compiled kernels please")
    idx.top_k("warm up the compiled kernels please", 10)
    print(f"pool starts with {len(seeds)} paper seeds; {len(real)} real instructions feed the stream")
    t_dec = t_meta = 0.0
    pool_sizes: list[int] = []   # pool size each candidate was checked against (for the extrapolation)
    accepted = rejected = 0
    report = {}
    for target in sizes:
        while accepted < target:
            cand = next(gen)
            pool_sizes.append(len(idx))
            t = time.perf_counter()
            match = idx.most_similar(cand)
            t_dec += time.perf_counter() - t
            if match is None:
                t = time.perf_counter()
                idx.top_k(cand, 10)
                idx.add(cand)
                t_meta += time.perf_counter() - t
                accepted += 1
            else:
                rejected += 1
        report[target] = {"candidates": accepted + rejected, "rejected": rejected, "decisions_s": t_dec,
                          "with_meta_s": t_dec + t_meta, "pairs": sum(pool_sizes)}
        print(f"\n== machine pool {target:,} ({len(idx):,} with seeds): {accepted + rejected:,} candidates, "
              f"{rejected:,} rejected; ours: decisions {t_dec:.1f} s, decisions + top-10/mean metadata "
              f"{t_dec + t_meta:.1f} s")
        n = args.sample if target == sizes[0] else args.sample_large
        sample = [next(gen) for _ in range(n)]
        sbs = side_by_side(idx, sample, args)
        report[target]["side_by_side"] = sbs
        print(f"   side by side on {n} more candidates against the {sbs['pool']:,} pool "
              f"({sbs['rejected']} rejected): decisions and max scores identical to rouge-score: {sbs['identical']}")
        print(f"   per candidate   rouge-score loop {sbs['rouge_score_ms']:9.1f} ms | pre-tokenised _score_lcs "
              f"{sbs['pretokenised_ms']:8.1f} ms | ours {sbs['ours_decision_ms']:.3f} ms "
              f"(with metadata {sbs['ours_with_meta_ms']:.3f} ms)")
        print(f"   speed-up        vs rouge-score x{sbs['rouge_score_ms'] / sbs['ours_decision_ms']:,.0f} "
              f"(with metadata x{sbs['rouge_score_ms'] / sbs['ours_with_meta_ms']:,.0f}); "
              f"vs pre-tokenised x{sbs['pretokenised_ms'] / sbs['ours_decision_ms']:,.0f} "
              f"(with metadata x{sbs['pretokenised_ms'] / sbs['ours_with_meta_ms']:,.0f})")
        per_pair = report[sizes[0]]["side_by_side"]["per_pair_us"] * 1e-6
        est = report[target]["pairs"] * per_pair
        print(f"   whole build     rouge-score loop ~{est / 60:,.1f} min (EXTRAPOLATED: {report[target]['pairs']:,} pairs x "
              f"{per_pair * 1e6:.1f} us measured at {sizes[0]:,}) vs ours {t_dec + t_meta:.1f} s "
              f"-> x{est / (t_dec + t_meta):,.0f} (decisions only x{est / t_dec:,.0f})")
        for c in sample:   # keep the stream's pool identical to a run without the side-by-side pause
            pool_sizes.append(len(idx))
            if idx.most_similar(c) is None:
                idx.add(c)
                accepted += 1
            else:
                rejected += 1


if __name__ == "__main__":
    main()
