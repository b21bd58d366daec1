"""A tiny OpenAI-style chat-completions server on loopback that injects faults.

Used by the teacher tests (in a thread of the test process) and by
scripts/bench_teacher.py (as a separate process, so its CPU is not counted
as client CPU): `python tests/faultserver.py [--delay S]` prints its port.

Every answer echoes the last message's content ("echo:<content>"), so a test
can match each completion to its request. A `plan(content, attempt)` function
picks, per request, one action:

    ok         answer (after `delay` seconds)
    429        HTTP 429 with Retry-After: <retry_after>
    500        HTTP 500
    drop       close the connection without answering
    badjson    HTTP 200 whose body is not JSON
    nochoices  HTTP 200 JSON without choices
    slow       answer after `slow_s` seconds (past the client's timeout)
    hold       keep the request until `release()`, then close without answering
    401echo    HTTP 401 whose body echoes the Authorization header (a careless server)
    401        HTTP 401 (a revoked key)
    404        HTTP 404 with an HTML page (a web server that is not OpenAI-compatible)
    blackhole  accept the request and never answer, never close (until `release()`)

It is a raw asyncio protocol (keep-alive, no framework) so that serving costs
little CPU. Counters: `received[content]`, `answered[content]` (ok answers
written), `actions[action]`, `bodies[content]` (last request body),
`by_body[(content, sha256 of the whole request body)]` (a count above 1 is a request asked again).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import threading
from collections import Counter
from typing import Callable

from loopback_main import serve_forever

Plan = Callable[[str, int], str]
MODEL = "fault-model"
_REASONS = {200: "OK", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error"}


def _response(status: int, body: bytes, extra: str = "") -> bytes:
    head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'X')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}Connection: keep-alive\r\n\r\n")
    return head.encode() + body


def completion_body(content: str, prompt_tokens: int = 7, logprobs: int | None = None) -> bytes:
    text = "echo:" + content
    choice: dict = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    if logprobs is not None:
        choice["logprobs"] = {"content": [
            {"token": tok, "logprob": -0.5, "top_logprobs": [{"token": tok, "logprob": -0.5}] * logprobs}
            for tok in text.split()]}
    return json.dumps({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": MODEL,
        "choices": [choice],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(text.split()),
                  "total_tokens": prompt_tokens + len(text.split())},
    }).encode()


class TurnAt:
    """A plan that answers the first `after` chat requests (the ping's excepted: it is `spare`), then
    turns to `action` ("401", "blackhole", ...) for every request until `fix()`."""

    def __init__(self, after: int, action: str, spare: str = "Reply with the word: ready"):
        self.after, self.action, self.spare = after, action, spare
        self.seen = 0
        self.fixed = False

    def fix(self) -> None:
        self.fixed = True

    def __call__(self, content: str, attempt: int) -> str:
        if content == self.spare or self.fixed:
            return "ok"
        self.seen += 1
        return "ok" if self.seen <= self.after else self.action


class _Conn(asyncio.Protocol):
    def __init__(self, server: "FaultServer"):
        self.server = server
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            length = 0
            auth = ""
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value.strip())
                elif name == "authorization":
                    auth = value.strip()
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4:end + 4 + length]
            self.buf = self.buf[end + 4 + length:]
            self.server._handle(self.transport, head.split(" ", 2), body, auth)


class FaultServer:
    def __init__(self, plan: Plan | None = None, *, delay: float = 0.0, slow_s: float = 5.0,
                 retry_after: str = "0", models_status: int = 200):
        self.plan = plan or (lambda content, attempt: "ok")
        self.models_status = models_status  # what GET /models answers (401: a wrong key)
        self.delay, self.slow_s, self.retry_after = delay, slow_s, retry_after
        self.received: Counter = Counter()
        self.answered: Counter = Counter()
        self.actions: Counter = Counter()
        self.bodies: dict[str, dict] = {}
        self.by_body: Counter = Counter()
        self.auth: set[str] = set()        # Authorization headers seen
        self.holding = threading.Event()   # set while a request is held
        self._lock = threading.Lock()
        self._held: list[asyncio.Transport] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _handle(self, transport: asyncio.Transport, start: list[str], body: bytes, auth: str = "") -> None:
        path = start[1] if len(start) > 1 else "/"
        if start[0] == "GET" and path.endswith("/models") and self.models_status != 200:
            transport.write(_response(self.models_status, b'{"error": "no"}'))
            return
        if start[0] == "GET" and path.endswith("/models"):
            transport.write(_response(200, json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]}).encode()))
            return
        if not path.endswith("/chat/completions"):
            transport.write(_response(404, b'{"error": "not found"}'))
            return
        req = json.loads(body)
        content = req["messages"][-1]["content"]
        with self._lock:
            self.received[content] += 1
            self.by_body[(content, hashlib.sha256(body).hexdigest())] += 1
            attempt = self.received[content]
            self.bodies[content] = req
            if auth:
                self.auth.add(auth)
            action = self.plan(content, attempt)
            self.actions[action] += 1
        loop = self._loop or asyncio.get_running_loop()
        if action == "ok":
            payload = _response(200, completion_body(content, logprobs=req.get("top_logprobs") if req.get("logprobs") else None))

            def answer() -> None:
                if not transport.is_closing():
                    with self._lock:
                        self.answered[content] += 1
                    transport.write(payload)
            if self.delay > 0:
                loop.call_later(self.delay, answer)
            else:
                answer()
        elif action == "429":
            transport.write(_response(429, b'{"error": "slow down"}', f"Retry-After: {self.retry_after}\r\n"))
        elif action == "401echo":  # a careless server that echoes the credentials it got
            transport.write(_response(401, json.dumps({"error": f"invalid key: {auth}"}).encode()))
        elif action == "401":
            transport.write(_response(401, b'{"error": {"message": "Incorrect API key provided"}}'))
        elif action == "404":
            transport.write(_response(404, b"<html><body>Not Found</body></html>"))
        elif action == "blackhole":  # like hold, but no one is told: the client's timeout is all there is
            self._held.append(transport)
        elif action == "500":
            transport.write(_response(500, b'{"error": "boom"}'))
        elif action == "drop":
            transport.abort()
        elif action == "badjson":
            transport.write(_response(200, b"<html>not json"))
        elif action == "nochoices":
            transport.write(_response(200, b'{"object": "chat.completion", "choices": []}'))
        elif action == "slow":
            loop.call_later(self.slow_s, lambda: transport.is_closing() or transport.write(_response(200, completion_body(content))))
        elif action == "hold":
            self._held.append(transport)
            self.holding.set()
        else:
            raise ValueError(f"unknown action {action!r}")

    async def serve(self, port: int = 0) -> asyncio.AbstractServer:
        self._loop = asyncio.get_running_loop()
        srv = await self._loop.create_server(lambda: _Conn(self), "127.0.0.1", port, backlog=1024)
        self.port = srv.sockets[0].getsockname()[1]
        return srv

    # -- in a background thread (tests) -------------------------------------

    def start(self) -> "FaultServer":
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._srv = loop.run_until_complete(self.serve())
            ready.set()
            loop.run_forever()
            self._srv.close()
            loop.run_until_complete(self._srv.wait_closed())
            loop.close()
        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def release(self) -> None:
        """Close every held request's connection without an answer."""
        def go() -> None:
            for t in self._held:
                t.abort()
            self._held.clear()
            self.holding.clear()
        self._loop.call_soon_threadsafe(go)

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self.release()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> "FaultServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str]) -> None:
    """Serve in the foreground; print the port on stdout (for the benchmark)."""
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)

    serve_forever(lambda: FaultServer(delay=args.delay), args.port)


if __name__ == "__main__":
    main(sys.argv[1:])
