"""A loopback stand-in for OpenAI's Batch API and Anthropic's Message Batches, over real HTTP.

Endpoints (the documented ones the batch providers call):

    POST /v1/files  (multipart, purpose=batch)      GET /v1/files/{id}/content
    POST /v1/batches   GET /v1/batches[?limit&after]   GET /v1/batches/{id}   POST /v1/batches/{id}/cancel
    POST /v1/messages/batches   GET /v1/messages/batches[?limit&after_id]   GET /v1/messages/batches/{id}
    POST /v1/messages/batches/{id}/cancel            GET /v1/messages/batches/{id}/results

A batch advances only when it is retrieved: each GET processes `step` more
lines (all of them by default), so a test decides how far a batch gets
between polls. Every answer echoes the last message ("echo:<content>").
Faults, all in `Knobs` (and persisted, so they survive a restart):

    hold            retrieving does not advance anything
    expire_first    the first N batches created expire after `expire_after` lines
    fail_every      every k-th line of a batch fails (HTTP 500 / api_error) the first time it is processed
    bad_every       some lines are the row's own fault, every time (HTTP 400 / invalid_request_error)
    fail_first      the first N OpenAI batches fail validation as a whole
    shuffle         results come back in reverse order
    drop_creates    the first N create calls create the batch, then close the connection without answering

The whole state (files, batches, counters, knobs) is written to `state_file`
after every change, and read back by a new server on the same file: a test
stops the server between polls and starts another (same port or not).
Counters: `creations` (batches created), `billed[custom_id]` (times a line was
processed successfully: above 1 is a request paid twice), `lines_in` (lines
received in created batches).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse


@dataclass
class Knobs:
    step: int = 0               # lines processed per retrieve; 0: all
    hold: bool = False
    expire_first: int = 0
    expire_after: int = 0
    fail_every: int = 0
    shuffle: bool = False
    drop_creates: int = 0
    bad_every: int = 0          # lines i with i % bad_every == 1 are refused for good (HTTP 400 / invalid_request_error)
    fail_first: int = 0         # OpenAI: the first N batches created fail as a whole (status failed, no files)


@dataclass
class State:
    knobs: Knobs = field(default_factory=Knobs)
    files: dict = field(default_factory=dict)      # id -> text
    batches: dict = field(default_factory=dict)    # id -> batch dict (with our own "_lines", "_done")
    order: list = field(default_factory=list)      # batch ids, oldest first
    creations: int = 0
    create_calls: int = 0
    lines_in: int = 0
    billed: dict = field(default_factory=dict)     # custom_id -> successful processings
    tries: dict = field(default_factory=dict)      # custom_id -> times processed

    @classmethod
    def load(cls, path: Path) -> "State":
        if not path.exists():
            return cls()
        d = json.loads(path.read_text())
        d["knobs"] = Knobs(**d["knobs"])
        return cls(**d)


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")


def answer_text(messages: list[dict]) -> str:
    return "echo:" + messages[-1]["content"]


class BatchServer:
    def __init__(self, state_file: str | Path, port: int = 0):
        self.state_file = Path(state_file)
        self.state = State.load(self.state_file)
        self.lock = threading.RLock()
        self.port = port
        self.httpd: ThreadingHTTPServer | None = None

    # -- lifecycle ------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "BatchServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):
                server.handle(self, "GET")

            def do_POST(self):
                server.handle(self, "POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def __enter__(self) -> "BatchServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def save(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self.state)))
        tmp.replace(self.state_file)

    def set(self, **knobs) -> None:
        with self.lock:
            for k, v in knobs.items():
                setattr(self.state.knobs, k, v)
            self.save()

    # -- counters for the tests -----------------------------------------------------

    @property
    def creations(self) -> int:
        return self.state.creations

    @property
    def billed(self) -> dict[str, int]:
        return dict(self.state.billed)

    def paid_twice(self) -> dict[str, int]:
        return {k: v for k, v in self.state.billed.items() if v > 1}

    # -- HTTP -----------------------------------------------------------------------

    def reply(self, h: BaseHTTPRequestHandler, status: int, body, ctype: str = "application/json") -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(raw)))
        h.end_headers()
        h.wfile.write(raw)

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        n = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(n) if n else b""
        url = urlparse(h.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        parts = [p for p in url.path.split("/") if p][1:]  # after "v1"
        with self.lock:
            try:
                out = self.route(method, parts, q, body, h)
            except KeyError as e:
                out = (404, {"error": {"message": f"not found: {e}"}})
            if out is None:  # a dropped answer
                h.close_connection = True
                return
            self.save()
        status, payload = out[0], out[1]
        self.reply(h, status, payload, *(out[2:]))

    def route(self, method, parts, q, body, h):
        st = self.state
        if parts[:1] == ["files"]:
            if method == "POST" and len(parts) == 1:
                text = self.multipart_file(body, h.headers.get("Content-Type", ""))
                fid = "file-" + uuid.uuid4().hex[:12]
                st.files[fid] = text
                return 200, {"id": fid, "object": "file", "purpose": "batch", "bytes": len(text)}
            if method == "GET" and len(parts) == 3 and parts[2] == "content":
                return 200, st.files[parts[1]].encode(), "application/jsonl"
        if parts[:2] == ["messages", "batches"]:
            return self.anthropic(method, parts[2:], q, body)
        if parts[:1] == ["batches"]:
            return self.openai(method, parts[1:], q, body)
        return 404, {"error": {"message": "no such endpoint"}}

    @staticmethod
    def multipart_file(body: bytes, ctype: str) -> str:
        boundary = ctype.split("boundary=")[1].encode()
        for part in body.split(b"--" + boundary):
            if b'name="file"' in part:
                return part.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0].decode()
        raise KeyError("file part")

    # -- the batch model (shared) ---------------------------------------------------

    def create(self, kind: str, lines: list[dict], **extra) -> dict | None:
        st = self.state
        st.create_calls += 1
        bid = ("batch_" if kind == "openai" else "msgbatch_") + uuid.uuid4().hex[:16]
        expire = st.creations < st.knobs.expire_first
        fail = kind == "openai" and st.creations < st.knobs.fail_first
        st.creations += 1
        st.lines_in += len(lines)
        b = {"id": bid, "_kind": kind, "_lines": lines, "_done": {}, "_expire": expire, "_fail": fail, "_ended": None,
             "_created": time.time(), **extra}
        st.batches[bid] = b
        st.order.append(bid)
        if st.knobs.drop_creates > 0:
            st.knobs.drop_creates -= 1
            self.save()
            return None
        return b

    def advance(self, b: dict) -> None:
        k = self.state.knobs
        if b["_ended"] or k.hold:
            return
        if b.get("_fail"):
            b["_ended"] = "failed"
            return
        todo = [i for i in range(len(b["_lines"])) if str(i) not in b["_done"]]
        if b["_expire"] and len(b["_done"]) >= k.expire_after:
            b["_ended"] = "expired"
            return
        for n, i in enumerate(todo[:k.step or None]):
            if b["_expire"] and len(b["_done"]) >= k.expire_after:
                break
            line = b["_lines"][i]
            cid = line["custom_id"]
            self.state.tries[cid] = self.state.tries.get(cid, 0) + 1
            if k.fail_every and i % k.fail_every == 0 and self.state.tries[cid] == 1:
                b["_done"][str(i)] = {"ok": False}
                continue
            if k.bad_every and i % k.bad_every == 1:
                b["_done"][str(i)] = {"ok": False, "status": 400}
                continue
            msgs = line["body"]["messages"] if "body" in line else line["params"]["messages"]
            b["_done"][str(i)] = {"ok": True, "text": answer_text(msgs)}
            self.state.billed[cid] = self.state.billed.get(cid, 0) + 1
        if len(b["_done"]) == len(b["_lines"]):
            b["_ended"] = "completed"
        elif b["_expire"] and len(b["_done"]) >= k.expire_after:
            b["_ended"] = "expired"

    def ordered(self, b: dict) -> list[int]:
        idx = list(range(len(b["_lines"])))
        return idx[::-1] if self.state.knobs.shuffle else idx

    def page(self, kind: str, q: dict, after_key: str) -> dict:
        ids = [i for i in reversed(self.state.order) if self.state.batches[i]["_kind"] == kind]  # newest first
        after = q.get(after_key)
        if after:
            ids = ids[ids.index(after) + 1:]
        limit = int(q.get("limit", 20))
        chunk = ids[:limit]
        view = self.openai_view if kind == "openai" else self.anthropic_view
        data = [view(self.state.batches[i]) for i in chunk]
        return {"data": data, "has_more": len(ids) > limit, "first_id": chunk[0] if chunk else None,
                "last_id": chunk[-1] if chunk else None}

    # -- OpenAI ---------------------------------------------------------------------

    def openai(self, method, parts, q, body):
        st = self.state
        if method == "POST" and not parts:
            d = json.loads(body)
            text = st.files[d["input_file_id"]]
            lines = [json.loads(ln) for ln in text.splitlines() if ln.strip()]
            b = self.create("openai", lines, input_file_id=d["input_file_id"], metadata=d.get("metadata") or {},
                            endpoint=d["endpoint"], completion_window=d["completion_window"])
            return None if b is None else (200, self.openai_view(b))
        if method == "GET" and not parts:
            return 200, self.page("openai", q, "after")
        b = st.batches[parts[0]]
        if method == "POST" and parts[1:] == ["cancel"]:
            if not b["_ended"]:
                b["_ended"] = "cancelled"
            return 200, self.openai_view(b)
        if method == "GET" and len(parts) == 1:
            self.advance(b)
            return 200, self.openai_view(b)
        return 404, {"error": {"message": "no such endpoint"}}

    def openai_view(self, b: dict) -> dict:
        done = b["_done"]
        ok = sum(1 for v in done.values() if v["ok"])
        v = {"id": b["id"], "object": "batch", "endpoint": b["endpoint"], "input_file_id": b["input_file_id"],
             "completion_window": b["completion_window"], "metadata": b["metadata"],
             "created_at": int(b["_created"]), "status": b["_ended"] or "in_progress",
             "request_counts": {"total": len(b["_lines"]), "completed": ok, "failed": len(done) - ok},
             "output_file_id": None, "error_file_id": None}
        if b["_ended"] == "failed":
            v["errors"] = {"object": "list", "data": [{"code": "invalid", "message": "stand-in: validation failed"}]}
        elif b["_ended"]:
            if "_out" not in b:
                out, err = [], []
                for i in self.ordered(b):
                    line = b["_lines"][i]
                    r = done.get(str(i))
                    base = {"id": f"batch_req_{i}", "custom_id": line["custom_id"]}
                    if r is None:
                        code = "batch_expired" if b["_ended"] == "expired" else "batch_cancelled"
                        err.append({**base, "response": None, "error": {"code": code, "message": code}})
                    elif r["ok"]:
                        out.append({**base, "error": None, "response": {"status_code": 200, "request_id": "r", "body": {
                            "id": "chatcmpl", "object": "chat.completion", "model": line["body"]["model"],
                            "choices": [{"index": 0, "message": {"role": "assistant", "content": r["text"]},
                                         "finish_reason": "stop"}],
                            "usage": {"prompt_tokens": 7, "completion_tokens": len(r["text"].split())}}}})
                    else:
                        err.append({**base, "error": None, "response": {"status_code": r.get("status", 500),
                                                                        "request_id": "r",
                                                                        "body": {"error": {"message": "boom"}}}})
                b["_out"] = self.put_file(out)
                b["_err"] = self.put_file(err)
            v["output_file_id"], v["error_file_id"] = b["_out"], b["_err"]
        return v

    def put_file(self, lines: list[dict]) -> str | None:
        if not lines:
            return None
        fid = "file-" + uuid.uuid4().hex[:12]
        self.state.files[fid] = "".join(json.dumps(x) + "\n" for x in lines)
        return fid

    # -- Anthropic ------------------------------------------------------------------

    def anthropic(self, method, parts, q, body):
        st = self.state
        if method == "POST" and not parts:
            reqs = json.loads(body)["requests"]
            b = self.create("anthropic", reqs)
            return None if b is None else (200, self.anthropic_view(b))
        if method == "GET" and not parts:
            return 200, self.page("anthropic", q, "after_id")
        b = st.batches[parts[0]]
        if method == "POST" and parts[1:] == ["cancel"]:
            if not b["_ended"]:
                b["_ended"] = "canceled"
            return 200, self.anthropic_view(b)
        if method == "GET" and parts[1:] == ["results"]:
            if not b["_ended"]:
                return 400, {"error": {"type": "invalid_request_error", "message": "not ended"}}
            lines = []
            for i in self.ordered(b):
                cid = b["_lines"][i]["custom_id"]
                r = b["_done"].get(str(i))
                if r is None:
                    res = {"type": "expired" if b["_ended"] == "expired" else "canceled"}
                elif r["ok"]:
                    res = {"type": "succeeded", "message": {
                        "id": "msg", "type": "message", "role": "assistant", "stop_reason": "end_turn",
                        "content": [{"type": "text", "text": r["text"]}],
                        "usage": {"input_tokens": 7, "output_tokens": len(r["text"].split())}}}
                else:
                    etype = "invalid_request_error" if r.get("status") == 400 else "api_error"
                    res = {"type": "errored", "error": {"type": "error", "error": {"type": etype,
                                                                                   "message": "boom"}}}
                lines.append(json.dumps({"custom_id": cid, "result": res}))
            return 200, ("\n".join(lines) + "\n").encode(), "application/binary"
        if method == "GET" and len(parts) == 1:
            self.advance(b)
            return 200, self.anthropic_view(b)
        return 404, {"error": {"message": "no such endpoint"}}

    def anthropic_view(self, b: dict) -> dict:
        done = b["_done"]
        ok = sum(1 for v in done.values() if v["ok"])
        left = len(b["_lines"]) - len(done)
        ended = b["_ended"]
        counts = {"processing": 0 if ended else left, "succeeded": ok, "errored": len(done) - ok,
                  "canceled": left if ended == "canceled" else 0, "expired": left if ended == "expired" else 0}
        return {"id": b["id"], "type": "message_batch", "processing_status": "ended" if ended else "in_progress",
                "request_counts": counts, "created_at": iso(b["_created"]),
                "results_url": f"{self.base_url}/messages/batches/{b['id']}/results" if ended else None}
