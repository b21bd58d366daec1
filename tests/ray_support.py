"""Helpers for the Ray executor tests: small stages, a counting loopback server, a barrier.

Ray workers cannot import the tests folder, so the test modules register this
module with `ray.cloudpickle.register_pickle_by_value` (its classes travel by value).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from typing import Any

from pipeline import records
from pipeline.runner import ShardResult
from pipeline.store import Dataset, DatasetWriter
from pipeline.teacher.base import ChatRequest, Sampling


def register(ray) -> None:
    import sys
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def numbered_dataset(path, n: int, per_file: int) -> tuple[Dataset, list[dict[str, Any]]]:
    """n rows 'task i ...' over files of `per_file` rows (shards cross file boundaries)."""
    w = DatasetWriter(path, "seed")
    rows = [records.new_row(f"task {i} with some words", "", f"out {i}", origin="seed") for i in range(n)]
    for k in range(0, n, per_file):
        w.write_shard(k // per_file, rows[k:k + per_file])
    w.write_manifest()
    return Dataset(path, require_complete=True), rows


class EvenFilter:
    """Keeps rows whose number is even, rejects the others with a reason."""

    name = "evenfilter"

    def settings(self):
        return {"rule": "even"}

    def process(self, rows, ctx):
        kept, rej = [], []
        for r in rows:
            n = int(r["instruction"].split()[1])
            if n % 2 == 0:
                kept.append(dict(r, output=f"{r['output']} seen"))
            else:
                rej.append(records.rejected_row(r, self.name, "odd_number", f"n={n}"))
        return ShardResult(kept, rej, {"odd_seen": len(rej)})


class KillOnce(EvenFilter):
    """EvenFilter whose worker process dies (os._exit) the first time it meets one row."""

    name = "evenfilter"  # same stage: its output must equal EvenFilter's

    def __init__(self, marker: str, victim: str):
        self.marker, self.victim = marker, victim

    def process(self, rows, ctx):
        if any(r["instruction"] == self.victim for r in rows):
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass  # the retry: the first attempt already died
            else:
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                os._exit(1)
        return super().process(rows, ctx)


class EchoStage:
    """Asks the teacher once per row (the whole shard in one chat call), keeps the answers."""

    name = "echo"

    def __init__(self, barrier: Any = None, max_tokens: int = 16):
        self.barrier = barrier
        self.max_tokens = max_tokens

    def settings(self):
        return {"max_tokens": self.max_tokens}

    def process(self, rows, ctx):
        if self.barrier is not None:  # every worker starts sending at once
            import ray
            ray.get(self.barrier.arrive.remote())
        reqs = [ChatRequest([{"role": "user", "content": r["instruction"]}], Sampling(max_tokens=self.max_tokens),
                            record_id=r["id"], purpose="echo") for r in rows]
        kept, rej = [], []
        for r, c in zip(rows, ctx.teacher.chat(reqs)):
            if c.ok:
                kept.append(dict(r, output=c.text))
            else:
                rej.append(records.rejected_row(r, self.name, "teacher_error", c.error.kind if c.error else ""))
        return ShardResult(kept, rej)


class Barrier:
    """A Ray async actor: `arrive()` returns once `n` callers have arrived."""

    def __init__(self, n: int):
        self.n = n
        self.count = 0
        self.event: asyncio.Event | None = None

    async def arrive(self) -> int:
        if self.event is None:
            self.event = asyncio.Event()
        self.count += 1
        if self.count >= self.n:
            self.event.set()
        await self.event.wait()
        return self.count


class CountingServer:
    """OpenAI-style loopback server that records the most requests ever in flight and each seed."""

    def __init__(self, latency_s: float = 0.05):
        self.latency_s = latency_s
        self.in_flight = 0
        self.max_in_flight = 0
        self.seeds: dict[str, int] = {}
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        self.ready.wait(30)

    def _serve(self) -> None:
        from aiohttp import web

        async def models(_):
            return web.json_response({"data": [{"id": "count-model"}]})

        async def chat(request):
            body = json.loads(await request.read())
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                await asyncio.sleep(self.latency_s)  # a server's latency, not synchronisation
            finally:
                self.in_flight -= 1
            content = body["messages"][-1]["content"]
            self.seeds[content] = body.get("seed")
            return web.json_response({
                "choices": [{"message": {"role": "assistant", "content": "re:" + content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3}, "model": "count-model"})

        async def start():
            app = web.Application()
            app.router.add_get("/v1/models", models)
            app.router.add_post("/v1/chat/completions", chat)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]
            self.ready.set()

        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(start())
        self.loop.run_forever()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reset(self) -> None:
        self.max_in_flight = 0
        self.seeds = {}

    def close(self) -> None:
        async def stop():
            await self.runner.cleanup()
        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
