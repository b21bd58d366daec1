#!/usr/bin/env python
"""Benchmark: the pipeline's openai backend vs a bare AsyncOpenAI + semaphore loop.

Both sides, one after the other in this process, talk to the same loopback
server (tests/faultserver.py, a raw asyncio HTTP server run as a separate
process so that its CPU is not counted as client CPU), answering instantly
and after 200 ms, at concurrency 64 and 256.

    bare:      openai.AsyncOpenAI + asyncio.Semaphore, gather all requests
    pipeline:  TeacherFactory.build(openai backend + SQLite response cache), chat() per
               shard of --shard-rows requests, each shard's rows written as
               Parquet through store.DatasetWriter (fsync + rename), manifest last

Client CPU is `time.process_time()` over the run (every thread of this
process). Printed: requests/s and CPU seconds per 1,000 requests for both,
and the ratios pipeline/bare (targets: >= 0.9x requests/s, <= 1.3x CPU).

    python scripts/bench_teacher.py [--requests 2000] [--repeats 1]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline import records  # noqa: E402
from pipeline.config import TeacherSection  # noqa: E402
from pipeline.store import DatasetWriter  # noqa: E402
from pipeline.teacher import TeacherFactory  # noqa: E402
from pipeline.teacher.base import ChatRequest, Sampling  # noqa: E402

MODEL = "fault-model"
SAMPLING = Sampling(temperature=0.7, max_tokens=64)


def start_server(delay: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "faultserver.py"), "--delay", str(delay)],
                            stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}/v1"


def prompts(tag: str, n: int) -> list[str]:
    return [f"Instruction {tag}-{i}: explain topic number {i} in two sentences." for i in range(n)]


def run_bare(url: str, texts: list[str], concurrency: int) -> tuple[float, float, int]:
    from openai import AsyncOpenAI

    async def main() -> list[str]:
        client = AsyncOpenAI(base_url=url, api_key="bench-key")
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int, text: str) -> str:
            async with sem:
                r = await client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": text}], temperature=SAMPLING.temperature,
                    top_p=SAMPLING.top_p, max_tokens=SAMPLING.max_tokens, seed=i)
                return r.choices[0].message.content

        try:
            return await asyncio.gather(*(one(i, t) for i, t in enumerate(texts)))
        finally:
            await client.close()

    c0, t0 = time.process_time(), time.perf_counter()
    out = asyncio.run(main())
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall, cpu, sum(1 for o in out if o)


def run_pipeline(url: str, texts: list[str], concurrency: int, shard_rows: int, work: Path) -> tuple[float, float, int]:
    sec = TeacherSection(backend="openai", base_url=url, model=MODEL, concurrency=concurrency,
                         cache=True, cache_path=str(work / "cache.sqlite"))
    c0, t0 = time.process_time(), time.perf_counter()
    teacher = TeacherFactory(sec, work, 1).build()
    writer = DatasetWriter(work / "out", "bench")
    ok = 0
    for shard, start in enumerate(range(0, len(texts), shard_rows)):
        chunk = texts[start:start + shard_rows]
        reqs = [ChatRequest(messages=[{"role": "user", "content": t}], sampling=SAMPLING,
                            record_id=str(start + i), purpose="bench") for i, t in enumerate(chunk)]
        rows = []
        for t, c in zip(chunk, teacher.chat(reqs)):
            if c.ok:
                ok += 1
                rows.append(records.new_row(t, output=c.text, origin="bench", finish_reason=c.finish_reason,
                                            prompt_tokens=c.usage.prompt_tokens,
                                            completion_tokens=c.usage.completion_tokens))
        writer.write_shard(shard, rows)
    writer.write_manifest(teacher=teacher.stats.to_dict())
    teacher.close()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall, cpu, ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000, help="requests per run (default 2000)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per side and setting; medians are printed")
    ap.add_argument("--shard-rows", type=int, default=1000, help="pipeline rows per Parquet shard")
    ap.add_argument("--delays", default="0,0.2", help="server latencies in seconds, comma-separated")
    ap.add_argument("--concurrency", default="64,256", help="concurrency levels, comma-separated")
    args = ap.parse_args()
    n = args.requests

    tmp = Path(tempfile.mkdtemp(prefix="bench_teacher_"))
    print(f"{n} requests per run, {args.repeats} repeat(s), pipeline shards of {args.shard_rows} rows\n")
    print(f"{'latency':>8} {'conc':>5} {'side':>9} {'req/s':>9} {'cpu s/1k':>9}")
    results = []
    try:
        for delay in [float(d) for d in args.delays.split(",")]:
            proc, url = start_server(delay)
            try:
                # Warm-up: imports, lazy initialisation, first connections (not measured).
                run_bare(url, prompts("warm", 50), 16)
                run_pipeline(url, prompts("warm", 50), 16, 50, tmp / "warm")
                for conc in [int(c) for c in args.concurrency.split(",")]:
                    bare, pipe = [], []
                    for r in range(args.repeats):
                        w, c, ok = run_bare(url, prompts(f"b{delay}-{conc}-{r}", n), conc)
                        assert ok == n, f"bare: {ok}/{n} answered"
                        bare.append((n / w, c / n * 1000))
                        work = tmp / f"p{delay}-{conc}-{r}"
                        w, c, ok = run_pipeline(url, prompts(f"p{delay}-{conc}-{r}", n), conc, args.shard_rows, work)
                        assert ok == n, f"pipeline: {ok}/{n} answered"
                        pipe.append((n / w, c / n * 1000))
                        shutil.rmtree(work, ignore_errors=True)
                    b = tuple(statistics.median(x[i] for x in bare) for i in (0, 1))
                    p = tuple(statistics.median(x[i] for x in pipe) for i in (0, 1))
                    print(f"{delay * 1000:>6.0f}ms {conc:>5} {'bare':>9} {b[0]:>9.0f} {b[1]:>9.3f}")
                    print(f"{'':>8} {'':>5} {'pipeline':>9} {p[0]:>9.0f} {p[1]:>9.3f}   "
                          f"ratio req/s {p[0] / b[0]:.2f}x  cpu/req {p[1] / b[1]:.2f}x")
                    results.append((delay, conc, p[0] / b[0], p[1] / b[1]))
            finally:
                proc.terminate()
                proc.wait()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\nsummary (pipeline / bare): " + "; ".join(
        f"{d * 1000:.0f}ms c{c}: req/s {r:.2f}x cpu {k:.2f}x" for d, c, r, k in results))
    ok = all(r >= 0.9 and k <= 1.3 for _, _, r, k in results)
    print("target (>= 0.9x req/s, <= 1.3x cpu/request):", "met" if ok else "NOT met")


if __name__ == "__main__":
    main()
