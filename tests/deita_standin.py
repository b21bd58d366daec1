"""A loopback stand-in for a vLLM server running one of Deita's scorers: text completions with logprobs.

It answers like vLLM's OpenAI-compatible server for a base model without a
chat template: `GET /v1/models` lists its model, `POST /v1/completions`
answers one token with legacy logprobs (`tokens`, `token_logprobs`,
`top_logprobs` as a list of {token: logprob}), cut to the `logprobs` the
request asks for, and `POST /v1/chat/completions` is a 400 (no chat template),
so a test sees any chat request sent to it fail.

`first_token(prompt)` gives, per prompt, the first position's logprobs as a
list of (token, logprob), best first (None: answer with no generated token).
`bodies` keeps every request body and `paths` every path, in arrival order.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

FirstToken = Callable[[str], "list[tuple[str, float]] | None"]


class DeitaStandIn:
    def __init__(self, model: str, first_token: FirstToken, fail: Callable[[str], int | None] = lambda p: None):
        """`fail(prompt)`: an HTTP status to answer instead (e.g. 503), or None."""
        self.model, self.first_token, self.fail = model, first_token, fail
        self.bodies: list[dict] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def reply(self, status: int, obj: dict) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                with standin.lock:
                    standin.paths.append(self.path)
                self.reply(200, {"object": "list", "data": [{"id": standin.model, "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with standin.lock:
                    standin.paths.append(self.path)
                    standin.bodies.append(body)
                if self.path != "/v1/completions":
                    return self.reply(400, {"object": "error", "message": "this model has no chat template"})
                prompt = body["prompt"]
                if (status := standin.fail(prompt)) is not None:
                    return self.reply(status, {"object": "error", "message": "stand-in fault"})
                top = standin.first_token(prompt)
                k = int(body.get("logprobs") or 0)
                if top is None:
                    text, lp = "", None
                else:
                    text = top[0][0]
                    lp = {"tokens": [text], "token_logprobs": [top[0][1]], "text_offset": [len(prompt)],
                          "top_logprobs": [dict(top[:k])]} if k else None
                self.reply(200, {"id": "cmpl-1", "object": "text_completion", "model": standin.model,
                                 "choices": [{"index": 0, "text": text, "logprobs": lp, "finish_reason": "length"}],
                                 "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": 1}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> "DeitaStandIn":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
