"""A deterministic OpenAI-compatible teacher on loopback for the cost planner's tests.

Each answer is a function of the request's messages alone: a length of 4 to
110 words drawn from their hash (so a max_tokens of 40 cuts some answers, the
retry at 80 still cuts a few, and yields are non-trivial), one answer in 16 a
refusal. A word is a token. The server counts what it was asked and what it
reported (`requests`, `prompt_tokens`, `completion_tokens`): the truth a
projection is checked against.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WORDS = ("river stone light quiet paper engine garden window number music silver cloud market simple "
         "forest answer method signal winter bridge yellow orbit harbor lantern copper meadow").split()


def answer(messages: list[dict], max_tokens: int) -> tuple[str, str, int, int]:
    """(text, finish_reason, prompt_tokens, completion_tokens) for these messages."""
    text = "\n".join(m.get("content", "") for m in messages)
    h = hashlib.sha256(text.encode()).digest()
    prompt_tokens = max(len(text.split()), 1)
    if h[0] % 16 == 0:
        return "I'm sorry, but I cannot help with that.", "stop", prompt_tokens, 9
    n = 4 + int.from_bytes(h[1:3], "big") % 107
    words = [WORDS[(h[3 + i % 20] + 7 * i) % len(WORDS)] for i in range(n)]
    finish = "stop"
    if n > max_tokens:
        words, finish = words[:max_tokens], "length"
    return " ".join(words).capitalize() + ".", finish, prompt_tokens, len(words)


class StandIn:
    def __init__(self) -> None:
        self.requests = self.prompt_tokens = self.completion_tokens = 0
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(200, {"object": "list", "data": [{"id": "standin", "object": "model"}]})

            def do_POST(self):
                req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                text, finish, pt, ct = answer(req["messages"], int(req.get("max_tokens") or 512))
                with owner.lock:
                    owner.requests += 1
                    owner.prompt_tokens += pt
                    owner.completion_tokens += ct
                self._send(200, {"id": "x", "object": "chat.completion", "model": "standin",
                                 "choices": [{"index": 0, "finish_reason": finish,
                                              "message": {"role": "assistant", "content": text}}],
                                 "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def reset(self) -> None:
        with self.lock:
            self.requests = self.prompt_tokens = self.completion_tokens = 0

    def __enter__(self) -> "StandIn":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
