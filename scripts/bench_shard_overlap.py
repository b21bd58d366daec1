"""Benchmark: how busy a per-shard stage keeps the teacher, one shard at a time vs overlapping shards.

Runs the real Orca stage (`run_orca`, the whole teacher stack: breaker, length
guard, the openai backend) over the Dolly rows in ../shared/data/dolly_3k.json
against a loopback stand-in teacher in a separate process. The stand-in answers
a share (`--slow-share`, 5%) of requests in `--slow` seconds and the rest in
`--fast` seconds; which ones is fixed by a hash of the request (seeded), so
both modes get the same latencies. It counts requests in flight itself and
reports their time average over the run (first request in to last answer out)
as a share of the teacher's concurrency, side by side for

    lookahead 0   one shard at a time (the old behaviour)
    lookahead N   up to 1 + N shards at once, committed in order (the default)

and the same average up to the moment the last request was sent (the final
drain left out: no scheduler that does not know which answers are slow can
fill it), plus, as the ceiling, the same requests' latencies put through one pool of
`concurrency` workers in arrival order (what a single chat over every row
would reach: the drain after the last request is sent is the same for any
order-blind scheduler). Latencies are scaled down from the issue's 0.5 s / 10 s
(default 0.25 s / 5 s, the same 1:20 ratio) to keep the run short; the ratio is
what matters.

    python scripts/bench_shard_overlap.py [--fast 0.25 --slow 5 --concurrency 64 --shard-rows 1000]
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# -- the stand-in teacher (its own process) ------------------------------------------------------------

def serve(fast: float, slow: float, share: float, seed: int) -> None:
    import asyncio

    from aiohttp import web

    state = {"in_flight": 0, "area": 0.0, "t": None, "first": None, "last": None, "n": 0, "max": 0, "lat": [],
             "area_in": 0.0, "last_in": None}

    def tick() -> None:
        now = time.monotonic()
        if state["t"] is not None:
            state["area"] += state["in_flight"] * (now - state["t"])
        state["t"] = now

    def latency(content: str) -> float:
        h = int.from_bytes(hashlib.sha256(f"{seed}\x1f{content}".encode()).digest()[:8], "big") / 2 ** 64
        return slow if h < share else fast

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        content = body["messages"][-1]["content"]
        tick()
        if state["first"] is None:
            state["first"] = state["t"]
        state["area_in"], state["last_in"] = state["area"], state["t"]  # up to the last request's arrival
        state["in_flight"] += 1
        state["n"] += 1
        state["max"] = max(state["max"], state["in_flight"])
        lat = latency(content)
        state["lat"].append(lat)
        try:
            await asyncio.sleep(lat)
        finally:
            tick()
            state["in_flight"] -= 1
            state["last"] = state["t"]
        text = "Here is a careful answer. " + content[:200]
        return web.json_response({
            "id": "x", "object": "chat.completion", "created": 0, "model": "stand-in",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(content.split()), "completion_tokens": len(text.split())}})

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "stand-in", "object": "model"}]})

    async def stats(request: web.Request) -> web.Response:
        span = (state["last"] or 0) - (state["first"] or 0)
        sending = (state["last_in"] or 0) - (state["first"] or 0)
        out = {"requests": state["n"], "max_in_flight": state["max"], "span_s": span,
               "avg_in_flight": state["area"] / span if span > 0 else 0.0, "latencies": state["lat"],
               "avg_in_flight_sending": state["area_in"] / sending if sending > 0 else 0.0}
        if request.query.get("reset"):
            state.update(in_flight=0, area=0.0, t=None, first=None, last=None, n=0, max=0, lat=[], area_in=0.0,
                         last_in=None)
        return web.json_response(out)

    app = web.Application(client_max_size=1 << 24)
    app.add_routes([web.post("/v1/chat/completions", chat), web.get("/v1/models", models), web.get("/stats", stats)])

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        print(site._server.sockets[0].getsockname()[1], flush=True)  # noqa: SLF001 (the port, for the parent)
        await asyncio.Event().wait()
    asyncio.run(main())


# -- the client: the real Orca stage ---------------------------------------------------------------------

def ceiling(latencies: list[float], concurrency: int) -> float:
    """Average busy share of `concurrency` workers taking `latencies` in order (one pool over every request)."""
    free = [0.0] * concurrency
    end = 0.0
    for lat in latencies:
        t = heapq.heappop(free)
        heapq.heappush(free, t + lat)
        end = max(end, t + lat)
    return sum(latencies) / (concurrency * end) if end else 0.0


def run_mode(port: int, rows_dir: Path, work: Path, lookahead: int, args) -> dict:
    from pipeline.config import TeacherSection
    from pipeline.context import RunContext
    from pipeline.runner import run_shards
    from pipeline.stages.orca import OrcaConfig
    from pipeline.stages.orca.stage import OrcaStage
    from pipeline.store import Dataset
    from pipeline.teacher.factory import TeacherFactory

    base = f"http://127.0.0.1:{port}"
    urllib.request.urlopen(base + "/stats?reset=1").read()
    sec = TeacherSection(backend="openai", base_url=base + "/v1", model="stand-in", concurrency=args.concurrency,
                         cache=False, timeout_s=max(60.0, 4 * args.slow))
    ctx = RunContext(run_id=f"la{lookahead}", teacher_factory=TeacherFactory(sec, work, 0), progress=False)
    t0 = time.monotonic()
    try:
        m = run_shards(OrcaStage(OrcaConfig()), Dataset(rows_dir, require_complete=True), work / f"out-{lookahead}",
                       ctx, shard_rows=args.shard_rows, lookahead=lookahead)
    finally:
        ctx.close()
    wall = time.monotonic() - t0
    s = json.loads(urllib.request.urlopen(base + "/stats").read())
    return {"lookahead": lookahead, "rows_out": m["rows_out"], "wall_s": wall, "requests": s["requests"],
            "max_in_flight": s["max_in_flight"], "share": s["avg_in_flight"] / args.concurrency,
            "sending": s["avg_in_flight_sending"] / args.concurrency,
            "ceiling": ceiling(s["latencies"], args.concurrency)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--fast", type=float, default=0.25)
    ap.add_argument("--slow", type=float, default=5.0)
    ap.add_argument("--slow-share", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--shard-rows", type=int, default=1000)
    ap.add_argument("--lookahead", type=int, default=None, help="the overlapping mode's (default: the runner's)")
    ap.add_argument("--rows", type=int, default=None, help="only the first N Dolly rows")
    ap.add_argument("--data", default=os.environ.get("DISTILL_SHARED_DATA", str(ROOT.parent / "shared" / "data")))
    args = ap.parse_args()
    if args.serve:
        serve(args.fast, args.slow, args.slow_share, args.seed)
        return

    from pipeline.records import new_row
    from pipeline.runner import shard_lookahead
    from pipeline.store import DatasetWriter

    dolly = json.loads((Path(args.data) / "dolly_3k.json").read_text())[:args.rows]
    lookahead = shard_lookahead() if args.lookahead is None else args.lookahead
    srv = subprocess.Popen([sys.executable, __file__, "--serve", "--fast", str(args.fast), "--slow", str(args.slow),
                            "--slow-share", str(args.slow_share), "--seed", str(args.seed)],
                           stdout=subprocess.PIPE, text=True)
    try:
        port = int(srv.stdout.readline())
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            w = DatasetWriter(work / "dolly", "import")
            w.write_shard(0, [new_row(r["instruction"], r["input"], r["output"], origin="import") for r in dolly])
            w.write_manifest()
            print(f"Orca over {len(dolly)} Dolly rows, shards of {args.shard_rows}, concurrency {args.concurrency}; "
                  f"stand-in teacher: {1 - args.slow_share:.0%} in {args.fast:g} s, {args.slow_share:.0%} in "
                  f"{args.slow:g} s (the issue's 0.5 s / 10 s scaled by {args.fast / 0.5:g})")
            results = [run_mode(port, work / "dolly", work, la, args) for la in (0, lookahead)]
    finally:
        srv.terminate()
        srv.wait()
    print("in flight / concurrency, averaged over the whole run (first request in to last answer out), over the")
    print("time until the last request was sent (the final drain left out), and the ceiling for the whole run:")
    print(f"{'mode':<14}{'whole run':>10}{'until last sent':>17}{'ceiling':>9}{'max in flight':>15}{'requests':>10}"
          f"{'wall s':>8}")
    for r in results:
        print(f"{'lookahead ' + str(r['lookahead']):<14}{r['share']:>10.3f}{r['sending']:>17.3f}{r['ceiling']:>9.3f}"
              f"{r['max_in_flight']:>15}{r['requests']:>10}{r['wall_s']:>8.1f}")
    old, new = results
    print(f"overlap / one-at-a-time: {new['share'] / old['share']:.2f}x the requests in flight; "
          f"{new['share'] / new['ceiling']:.3f} of the ceiling (one pool over every request in arrival order)")


if __name__ == "__main__":
    main()
