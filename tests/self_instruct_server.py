"""A loopback OpenAI-compatible stand-in teacher for Self-Instruct scheduling: latency, jitter, a concurrency count.

Used by tests/test_self_instruct_window.py (in a thread of the test process) and by
scripts/bench_self_instruct.py (as a separate process, so its CPU is not the client's):
`python tests/self_instruct_server.py --latency 0.5` prints its port.

Every answer is a pure function of the request's messages and seed, as a real
teacher's (and the response cache's) would be; only its latency varies:

    bootstrap   7 new numbered tasks of random words drawn from a 3,000-word
                vocabulary with an rng seeded by the prompt, so ROUGE-L lets
                nearly all of them through, and a prompt built from another
                pool state gets other tasks
    classify    "Yes" for tasks that start with "Rank", else "No"
    instances   two examples (output-first "Class label:" for classification)

Latency: `latency` seconds, plus a uniform share of `jitter` seconds drawn from
an rng seeded by (`jitter_seed`, the request), so two servers with different
jitter seeds answer the same requests in different orders. Counters (GET /stats; GET /reset
returns them and starts them again):
requests, peak (most requests in flight at once), peak_by_kind, mixed (bootstrap
requests that arrived while a classification or instance request was in flight), and busy (the integral of the
number in flight over time, in request-seconds), first and last (monotonic
times of the first arrival and the last answer).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import sys
import threading
import time

from loopback_main import serve_forever

MODEL = "standin-model"
VERBS = "Describe Compare Summarize Explain Critique Outline Rank Plan Praise Question Translate Classify".split()
_SYLLABLES = "ka lo mi ne ru ta vo shi pe ga bu di ze fo ha ji ko lu ma no pi ra se to vu wa yo".split()


def _vocabulary(n: int = 3000) -> list[str]:
    rng = random.Random(7)
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


WORDS = _vocabulary()


def digest(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "big")


def task(rng: random.Random) -> str:
    return f"{rng.choice(VERBS)} the " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(7, 11)))


def kind(body: dict) -> str:
    content = body["messages"][-1]["content"]
    if content.startswith("Continue this numbered list"):
        return "bootstrap"
    return "classify" if content.startswith("A task is a classification task") else "instances"


def answer(body: dict) -> str:
    content = body["messages"][-1]["content"]
    rng = random.Random(digest(content, body.get("seed")))
    if content.startswith("Continue this numbered list"):
        nxt = int(content.rstrip().rsplit("\n", 1)[1].rstrip("."))
        items = [task(rng) for _ in range(7)]
        return items[0] + "".join(f"\n{nxt + i}. {t}" for i, t in enumerate(items[1:], 1))
    ins = content.rsplit("Task: ", 1)[1].split("\n")[0]
    if content.startswith("A task is a classification task"):
        return "Yes" if ins.startswith("Rank") else "No"
    words = " ".join(rng.choice(WORDS) for _ in range(5))
    if "Class label" in content:
        return f"Class label: High\n{words}\nClass label: Low\n{words} two"
    return f"Example 1\nInput: {words}\nOutput: {rng.choice(WORDS)}\nExample 2\nInput: {words} two\nOutput: {rng.choice(WORDS)}"


class StandIn:
    def __init__(self, latency: float = 0.5, jitter: float = 0.0, jitter_seed: int = 0):
        self.latency, self.jitter, self.jitter_seed = latency, jitter, jitter_seed
        self.requests = self.in_flight = self.peak = self.mixed = 0
        self.kinds = {"bootstrap": 0, "classify": 0, "instances": 0}
        self.peak_by_kind = dict(self.kinds)
        self.asked: list[str] = []      # sha256 of each request body, in arrival order
        self.order: list[str] = []      # the same, in answer order
        self.busy = 0.0
        self.first: float | None = None
        self.last = 0.0
        self._since = 0.0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stats(self) -> dict:
        return {"requests": self.requests, "peak": self.peak, "busy": self.busy, "first": self.first, "last": self.last,
                "peak_by_kind": self.peak_by_kind, "mixed": self.mixed}

    def reset(self) -> None:
        self.requests = self.peak = self.mixed = 0
        self.peak_by_kind = dict.fromkeys(self.kinds, 0)
        self.asked, self.order = [], []
        self.busy, self.first, self.last = 0.0, None, 0.0

    def _change(self, d: int) -> None:
        now = time.monotonic()
        self.busy += self.in_flight * (now - self._since)
        self._since = now
        self.in_flight += d
        self.peak = max(self.peak, self.in_flight)
        if d > 0 and self.first is None:
            self.first = now
        if d < 0:
            self.last = now

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                length = next((int(ln.split(":", 1)[1]) for ln in lines if ln.lower().startswith("content-length:")), 0)
                body = await reader.readexactly(length) if length else b""
                path = lines[0].split(" ")[1]
                if path.endswith("/models"):
                    out = {"object": "list", "data": [{"id": MODEL, "object": "model"}]}
                elif path.endswith("/stats"):
                    out = self.stats()
                elif path.endswith("/reset"):
                    out = self.stats()
                    self.reset()
                else:
                    out = await self._complete(json.loads(body))
                data = json.dumps(out).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(data) + data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _complete(self, body: dict) -> dict:
        k = kind(body)
        key = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        self.requests += 1
        self.asked.append(key)
        if k == "bootstrap" and (self.kinds["classify"] or self.kinds["instances"]):
            self.mixed += 1
        self.kinds[k] += 1
        self.peak_by_kind[k] = max(self.peak_by_kind[k], self.kinds[k])
        self._change(+1)
        try:
            wait = self.latency + self.jitter * random.Random(digest(self.jitter_seed, key)).random()
            await asyncio.sleep(wait)
            text = answer(body)
        finally:
            self._change(-1)
            self.kinds[k] -= 1
            self.order.append(key)
        n = len(text.split())
        return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": MODEL,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 50, "completion_tokens": n, "total_tokens": 50 + n}}

    async def serve(self, port: int = 0) -> asyncio.AbstractServer:
        srv = await asyncio.start_server(self._serve, "127.0.0.1", port, backlog=1024)
        self.port = srv.sockets[0].getsockname()[1]
        return srv

    def start(self) -> "StandIn":
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            srv = loop.run_until_complete(self.serve())
            ready.set()
            loop.run_forever()
            srv.close()
            # end the connections' coroutines on this loop: left to the garbage collector they would
            # run their `finally` on a closed loop
            tasks = asyncio.all_tasks(loop)
            for t in tasks:
                t.cancel()

            async def finish() -> None:
                await asyncio.gather(*tasks, return_exceptions=True)
            loop.run_until_complete(finish())
            loop.close()
        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> "StandIn":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str]) -> None:
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency", type=float, default=0.5)
    ap.add_argument("--jitter", type=float, default=0.0)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)

    serve_forever(lambda: StandIn(args.latency, args.jitter), args.port)


if __name__ == "__main__":
    main(sys.argv[1:])
