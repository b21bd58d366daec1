#!/usr/bin/env python
"""Benchmark: Evol-Instruct pipeline overhead, with the teacher answering instantly.

A loopback OpenAI-compatible server (this script with --serve, a separate
process so its CPU is not ours) answers at once and plays the teacher's
three roles from the prompt it gets: an evolve prompt gets a rewrite of the
given prompt (about 1 in 10 leaks a meta term), the equality judge says
"Not Equal" (about 1 in 20 "Equal"), anything else gets a 60-word answer.

Side by side in one invocation, through the same openai backend
(TeacherFactory.build, concurrency 256, SQLite response cache on, fresh files):

    bare   the same number of requests in the same batches (per shard:
           evolve, judge, answer), short fixed prompts, no pipeline work
    stage  run_evol_instruct over N instructions x R rounds

Pipeline overhead = stage wall time - time spent inside teacher.chat().
Printed: evolutions per second of pipeline overhead (target >= 500), teacher
calls per accepted evolution, and the stage / bare wall-time ratio.

    python scripts/bench_evol.py [--instructions 2000] [--rounds 2] [--concurrency 256]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GIVEN = re.compile(r"#Given Prompt#:\n(.*?)\n\n#(?:Rewritten|Created) Prompt#:", re.S)
ANSWER = " ".join(f"point{i}" for i in range(60))


# --- the instant teacher ---------------------------------------------------------

def reply_for(content: str) -> str:
    h = zlib.crc32(content.encode())
    m = GIVEN.search(content)
    if m:
        given = m.group(1)
        if h % 10 == 0:
            return f"Here is the rewritten prompt: {given}"
        return f"#Rewritten Prompt#: {given} Cite {h % 7 + 2} sources and explain each step."
    if content.startswith("Compare the two task prompts"):
        return "Equal" if h % 20 == 0 else "Not Equal"
    return f"Answer {h}: {ANSWER}"


class Handler(asyncio.Protocol):
    def connection_made(self, transport):
        self.t = transport
        self.buf = b""

    def data_received(self, data):
        self.buf += data
        while True:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buf[:head_end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                k, _, v = line.partition(":")
                if k.strip().lower() == "content-length":
                    length = int(v)
            if len(self.buf) < head_end + 4 + length:
                return
            body = self.buf[head_end + 4: head_end + 4 + length]
            self.buf = self.buf[head_end + 4 + length:]
            if head.startswith("GET"):
                out = json.dumps({"object": "list", "data": [{"id": "instant", "object": "model"}]}).encode()
            else:
                req = json.loads(body)
                text = reply_for(req["messages"][-1]["content"])
                out = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "instant",
                                  "choices": [{"index": 0, "finish_reason": "stop",
                                               "message": {"role": "assistant", "content": text}}],
                                  "usage": {"prompt_tokens": 50, "completion_tokens": len(text.split())}}).encode()
            self.t.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                         + str(len(out)).encode() + b"\r\nConnection: keep-alive\r\n\r\n" + out)


def serve() -> None:
    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Handler, "127.0.0.1", 0, backlog=1024)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()
    asyncio.run(main())


# --- the two sides -------------------------------------------------------------------

def teacher(url: str, concurrency: int, workdir: Path):
    from pipeline.config import TeacherSection
    from pipeline.teacher import TeacherFactory
    sec = TeacherSection(backend="openai", base_url=url, model="instant", concurrency=concurrency, cache=True,
                         cache_path=str(workdir / "cache.sqlite"))
    return TeacherFactory(sec, workdir, 0).build()


def run_stage(url: str, n: int, rounds: int, concurrency: int, shard_rows: int, workdir: Path) -> dict:
    from pipeline import records
    from pipeline.context import RunContext
    from pipeline.stages.evol_instruct import EvolConfig, run_evol_instruct
    from pipeline.store import DatasetWriter

    src = workdir / "in"
    rows = [records.new_row(f"Describe how process number {i} works in a small town, in plain words.", "",
                            f"answer {i}", origin="import") for i in range(n)]
    w = DatasetWriter(src, "import")
    for k in range(0, n, shard_rows):
        w.write_shard(k // shard_rows, rows[k:k + shard_rows])
    w.write_manifest()
    t = teacher(url, concurrency, workdir)
    ctx = RunContext(run_id="bench", seed=0, teacher_factory=lambda: t, progress=False)
    t0 = time.perf_counter()
    m = run_evol_instruct(src, workdir / "out", ctx, EvolConfig(rounds=rounds), shard_rows=shard_rows)
    wall = time.perf_counter() - t0
    ctx.close()
    m["bench_wall"] = wall
    return m


def run_bare(url: str, batches: list[int], concurrency: int, workdir: Path) -> float:
    from pipeline.teacher.base import ChatRequest, Sampling
    t = teacher(url, concurrency, workdir)
    s = Sampling(temperature=1.0, top_p=0.95, max_tokens=512)
    t0 = time.perf_counter()
    k = 0
    for size in batches:
        reqs = [ChatRequest([{"role": "user", "content": f"bare request {k + i}"}], s, record_id=str(k + i),
                            purpose="bare") for i in range(size)]
        k += size
        t.chat(reqs)
    wall = time.perf_counter() - t0
    t.close()
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instructions", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--shard-rows", type=int, default=1000)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve:
        serve()
        return
    proc = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{int(proc.stdout.readline())}/v1"
        with tempfile.TemporaryDirectory() as d:
            m = run_stage(url, a.instructions, a.rounds, a.concurrency, a.shard_rows, Path(d) / "stage")
            markers = []
            for r in range(1, a.rounds + 1):
                done = Path(d) / "stage" / "out" / "_rounds" / f"round-{r:02d}" / "_done"
                markers += [json.loads(p.read_text()) for p in sorted(done.glob("*.json"))]
            batches = [mk.get(f"calls_{step}", 0) for mk in markers for step in ("evolve", "judge", "answer")]
            bare = run_bare(url, [b for b in batches if b], a.concurrency, Path(d) / "bare")
    finally:
        proc.terminate()
        proc.wait()
    teacher_s = sum(p.get("teacher_seconds", 0) for p in m["per_round"])
    tried = sum(p.get("rows_in", 0) for p in m["per_round"])
    calls = sum(p.get("teacher_calls", 0) for p in m["per_round"])
    overhead = m["bench_wall"] - teacher_s
    print(f"bench_evol: {a.instructions} instructions x {a.rounds} rounds, instant loopback teacher, "
          f"concurrency {a.concurrency}, shard rows {a.shard_rows}")
    print(f"  bare teacher traffic : {calls} requests in {bare:.2f} s ({calls / bare:.0f} req/s)")
    print(f"  stage                : {m['bench_wall']:.2f} s wall, {teacher_s:.2f} s inside teacher.chat, "
          f"{overhead:.2f} s pipeline overhead")
    print(f"  evolutions tried {tried}, accepted {m['evolutions_accepted']}, drops {m['drops']}")
    print(f"  pipeline overhead rate: {tried / overhead:.0f} evolutions/s (target >= 500)")
    print(f"  teacher calls per accepted evolution: {m['teacher_calls_per_accepted']}")
    print(f"  ratio stage wall / bare teacher wall: {m['bench_wall'] / bare:.2f}x")


if __name__ == "__main__":
    main()
