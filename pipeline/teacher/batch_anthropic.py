"""Anthropic's Message Batches as a batch provider (backend `anthropic_batch`).

Calls, under `teacher.base_url` (default https://api.anthropic.com/v1), with
the key of `teacher.api_key_env` as `x-api-key` and `anthropic-version: 2023-06-01`:

    POST /messages/batches               {requests: [{custom_id, params}]}
    GET  /messages/batches/{id}          processing_status (in_progress, canceling, ended), request_counts
                                         (processing, succeeded, errored, canceled, expired), results_url
    GET  /messages/batches?limit&after_id  the list, newest first, to find a batch after a lost create answer
    POST /messages/batches/{id}/cancel
    GET  <results_url>                   JSONL: {custom_id, result: {type: succeeded | errored | canceled |
                                         expired, message | error}}

`params` is a Messages request: system messages go to `system`, `stop` to
`stop_sequences`; no seed (the API has none). Limits: 100,000 requests or
256 MB per batch. Message Batches carry no metadata, so a batch whose create
answer was lost is found by its size and creation time (`find`: the oldest
batch not in the journal, created after the intent, with as many requests).
Reads the input file the batch teacher wrote; writes nothing on disk.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from .base import ChatRequest
from .batch_format import BatchState, LineResult
from .batch_http import BatchHTTP

DEFAULT_URL = "https://api.anthropic.com/v1"
VERSION = "2023-06-01"
MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1024 * 1024
STOP = {"max_tokens": "length", "end_turn": "stop", "stop_sequence": "stop"}
CLOCK_SKEW_S = 300  # the provider's clock against ours, when matching a batch to an intent


def params(model: str, req: ChatRequest) -> dict[str, Any]:
    s = req.sampling
    system = "\n\n".join(m["content"] for m in req.messages if m.get("role") == "system")
    p: dict[str, Any] = {"model": model, "max_tokens": s.max_tokens, "temperature": s.temperature,
                         "messages": [{"role": m["role"], "content": m["content"]}
                                      for m in req.messages if m.get("role") != "system"]}
    if system:
        p["system"] = system
    if s.top_p < 1.0:
        p["top_p"] = s.top_p
    if s.stop:
        p["stop_sequences"] = list(s.stop)
    return p


def parse_result(d: dict[str, Any]) -> LineResult | None:
    cid = d.get("custom_id")
    res = d.get("result") or {}
    kind = res.get("type")
    if not cid:
        return None
    if kind == "succeeded":
        msg = res.get("message") or {}
        text = "".join(b.get("text", "") for b in msg.get("content") or [] if b.get("type") == "text")
        usage = msg.get("usage") or {}
        return LineResult(cid, "succeeded", text=text, finish_reason=STOP.get(msg.get("stop_reason"), "stop"),
                          prompt_tokens=int(usage.get("input_tokens") or 0),
                          completion_tokens=int(usage.get("output_tokens") or 0))
    if kind in ("canceled", "expired"):
        return LineResult(cid, kind)
    err = ((res.get("error") or {}).get("error")) or res.get("error") or {}
    etype = str(err.get("type", "api_error"))
    row_caused = etype == "invalid_request_error"
    return LineResult(cid, "errored", error_kind="bad_request" if row_caused else "server_error",
                      message=f"{etype}: {str(err.get('message', ''))[:300]}", retryable=not row_caused)


def unix(ts: str | None) -> float:
    if not ts:
        return 0.0
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


class AnthropicBatchProvider:
    name = "anthropic_batch"
    overhead = 1  # the comma between requests in the create body

    def __init__(self, section: Any, **http: Any):
        self.base_url = (section.base_url or DEFAULT_URL).rstrip("/")
        self.endpoint = self.base_url
        self.key_env = section.api_key_env
        self.max_requests = min(section.batch_max_requests or MAX_REQUESTS, MAX_REQUESTS)
        self.max_bytes = min(section.batch_max_bytes or MAX_BYTES, MAX_BYTES) - 64  # the body's framing
        self.http = BatchHTTP(self.base_url, self.headers, self.key_env, timeout_s=section.timeout_s,
                              retries=section.max_retries, **http)

    def __repr__(self) -> str:
        return f"AnthropicBatchProvider(base_url={self.base_url!r})"

    def headers(self) -> dict[str, str]:
        key = os.environ.get(self.key_env)
        return {"Accept": "application/json", "anthropic-version": VERSION, **({"x-api-key": key} if key else {})}

    def line(self, custom_id: str, model: str, req: ChatRequest, seed: int) -> bytes:
        return json.dumps({"custom_id": custom_id, "params": params(model, req)},
                          ensure_ascii=False).encode("utf-8") + b"\n"

    def create(self, key: str, path: Path) -> str:
        lines = [ln for ln in path.read_bytes().split(b"\n") if ln.strip()]
        body = b'{"requests":[' + b",".join(lines) + b"]}"
        raw = self.http.call("POST", "/messages/batches", body, once=True)
        return json.loads(raw)["id"]

    def find(self, key: str, since: float, count: int, known: set[str]) -> str | None:
        after = None
        found: list[tuple[float, str]] = []
        while True:
            page = self.http.json("GET", "/messages/batches?limit=100" + (f"&after_id={after}" if after else ""))
            data = page.get("data") or []
            for b in data:
                total = sum(int(v or 0) for v in (b.get("request_counts") or {}).values())
                created = unix(b.get("created_at"))
                if b["id"] not in known and total == count and created >= since - CLOCK_SKEW_S:
                    found.append((created, b["id"]))
            oldest = min((unix(b.get("created_at")) for b in data), default=0.0)
            if not page.get("has_more") or not data or oldest < since - CLOCK_SKEW_S:
                break
            after = page.get("last_id") or data[-1]["id"]
        return min(found)[1] if found else None

    def state(self, d: dict[str, Any]) -> BatchState:
        status = str(d.get("processing_status", "unknown"))
        counts = {k: int(v or 0) for k, v in (d.get("request_counts") or {}).items()}
        return BatchState(status, ended=status == "ended", counts=counts, unprocessed="expired", raw=d)

    def status(self, batch_id: str) -> BatchState:
        return self.state(self.http.json("GET", f"/messages/batches/{batch_id}"))

    def results(self, st: BatchState) -> list[LineResult]:
        url = (st.raw or {}).get("results_url")
        if not url:
            return []
        out = []
        for line in self.http.call("GET", url).decode("utf-8", "replace").splitlines():
            try:
                r = parse_result(json.loads(line)) if line.strip() else None
            except ValueError:
                r = None
            if r is not None:
                out.append(r)
        return out

    def cancel(self, batch_id: str) -> BatchState:
        return self.state(self.http.json("POST", f"/messages/batches/{batch_id}/cancel", {}))
