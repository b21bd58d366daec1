"""A loopback stand-in of a reasoning teacher: OpenAI-style /v1/chat/completions in a thread of the test.

Two shapes, chosen by `mode`:

    field   what vLLM's server returns with `--reasoning-parser` (docs.vllm.ai, "Reasoning Outputs"): the
            trace in `message.reasoning_content` (`field_name="reasoning"`: vLLM >= 0.11), the answer in `content`
    think   an R1-style model behind a server without a parser: `<think>trace</think>answer` in `content`
    cut     a reply cut off while thinking, as vLLM's parser returns it: `content` null, part of the trace

Each answer is worked out from the question so tests can check both halves: for "What is A + B?" the trace
is "To add A and B: A + B = S." and the answer "The answer is S."; anything else gets a fixed trace and
"Answer: ok" (or what `reply(question) -> (trace, answer)` says, when given). Counts requests in `received`.

A request with `logprobs: true` and `top_logprobs: k` gets `choice.logprobs.content` in the shape the OpenAI
API documents (platform.openai.com, "Chat Completions", logprobs): one {token, logprob, bytes, top_logprobs:
[{token, logprob, bytes}, ...k]} per token of `content` (words with their leading space), the top list in no
particular order. The last alternative is half of a UTF-8 character ("\ufffd", bytes E2 80), as llama.cpp's
server returns a token that splits one. Values are a pure function of the text, so two runs get the same.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

MODEL = "reasoning-model"
_SUM = re.compile(r"What is (\d+) \+ (\d+)\?")


def solve(question: str) -> tuple[str, str]:
    m = _SUM.search(question)
    if m:
        a, b = int(m.group(1)), int(m.group(2))
        return f"To add {a} and {b}: {a} + {b} = {a + b}.", f"The answer is {a + b}."
    return "The task asks for a short reply; ok will do.", "Answer: ok"


def _entry(token: str, logprob: float) -> dict:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def logprobs_for(text: str, k: int) -> dict:
    """`choice.logprobs` for `text` at top-k (see the module doc)."""
    content = []
    for i, tok in enumerate(re.findall(r"\s*\S+", text)):
        h = hashlib.sha256(f"{i}:{tok}".encode()).digest()
        best = -round(h[0] / 255 * 2.0, 6)  # the generated token's logprob, in [-2, 0]
        alts = [_entry(tok, best)] + [_entry(f" alt{j}", round(best - 0.37 * j - h[j % 32] / 255, 6))
                                      for j in range(1, max(k - 1, 1))]
        half = {"token": "\ufffd", "logprob": round(best - 9.5, 6), "bytes": [0xE2, 0x80]}
        top = (alts + [half])[:k]
        cut = h[1] % len(top) if top else 0
        top = top[cut:] + top[:cut]  # no particular order
        content.append(dict(_entry(tok, best), top_logprobs=top))
    return {"content": content}


class ReasoningServer:
    def __init__(self, mode: str = "field", field_name: str = "reasoning_content",
                 reply: Callable[[str], tuple[str, str]] | None = None):
        self.mode, self.field_name = mode, field_name
        self.reply = reply or solve
        self.received = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, obj: dict) -> None:
                body = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self._send({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

            def do_POST(self):
                req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.received += 1
                trace, answer = server.reply(req["messages"][-1]["content"])
                message = {"role": "assistant"}
                finish = "stop"
                if server.mode == "cut":  # vLLM's parser on a reply cut off while thinking: content null
                    message.update({"content": None, server.field_name: trace[:12]})
                    finish = "length"
                elif server.mode == "field":
                    message.update({"content": answer, server.field_name: trace})
                else:
                    message["content"] = f"<think>\n{trace}\n</think>\n\n{answer}"
                choice = {"index": 0, "message": message, "finish_reason": finish}
                if req.get("logprobs") and message["content"]:
                    choice["logprobs"] = logprobs_for(message["content"], int(req.get("top_logprobs") or 0))
                self._send({"id": "chatcmpl-r", "object": "chat.completion", "created": 0, "model": MODEL,
                            "choices": [choice],
                            "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
