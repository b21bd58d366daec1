"""The OpenAI Batch API as a batch provider (backend `openai_batch`): any server with OpenAI's batch endpoints.

Calls, under `teacher.base_url` (default https://api.openai.com/v1):

    POST /files                    multipart, purpose=batch: the input JSONL (batch_format.py lines)
    POST /batches                  {input_file_id, endpoint: /v1/chat/completions, completion_window: 24h,
                                    metadata: {distill_batch: <our batch key>}}
    GET  /batches/{id}             status (validating, in_progress, finalizing, completed, failed, expired,
                                    cancelling, cancelled), request_counts, output_file_id, error_file_id
    GET  /batches?limit&after      the list, to find a batch by its metadata after a lost create answer
    POST /batches/{id}/cancel
    GET  /files/{id}/content       the output and error files

Limits: 50,000 requests and 200 MB per input file (OpenAI's documented
limits; `teacher.batch_max_requests` / `batch_max_bytes` lower them). The API
key is read from `teacher.api_key_env` and sent only as the bearer token.
Reads the input file the batch teacher wrote; writes nothing on disk.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .base import ChatRequest
from .batch_format import CHAT_URL, BatchState, LineResult, chat_body, openai_line, parse_openai_output
from .batch_http import BatchHTTP, multipart

DEFAULT_URL = "https://api.openai.com/v1"
MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024
METADATA_KEY = "distill_batch"
UNPROCESSED = {"expired": "expired", "cancelled": "canceled", "cancelling": "canceled", "failed": "errored"}


class OpenAIBatchProvider:
    name = "openai_batch"
    overhead = 0

    def __init__(self, section: Any, **http: Any):
        self.base_url = (section.base_url or DEFAULT_URL).rstrip("/")
        self.endpoint = self.base_url
        self.key_env = section.api_key_env
        self.max_requests = min(section.batch_max_requests or MAX_REQUESTS, MAX_REQUESTS)
        self.max_bytes = min(section.batch_max_bytes or MAX_BYTES, MAX_BYTES)
        self.http = BatchHTTP(self.base_url, self.headers, self.key_env, timeout_s=section.timeout_s,
                              retries=section.max_retries, **http)

    def __repr__(self) -> str:
        return f"OpenAIBatchProvider(base_url={self.base_url!r})"

    def headers(self) -> dict[str, str]:
        key = os.environ.get(self.key_env)
        return {"Accept": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}

    def line(self, custom_id: str, model: str, req: ChatRequest, seed: int) -> bytes:
        return openai_line(custom_id, chat_body(model, req, seed))

    def create(self, key: str, path: Path) -> str:
        body, ctype = multipart({"purpose": "batch"}, "file", f"{key}.jsonl", path.read_bytes())
        file_id = json.loads(self.http.call("POST", "/files", body, content_type=ctype))["id"]
        batch = self.http.json("POST", "/batches", {
            "input_file_id": file_id, "endpoint": CHAT_URL, "completion_window": "24h",
            "metadata": {METADATA_KEY: key}}, once=True)
        return batch["id"]

    def find(self, key: str, since: float, count: int, known: set[str]) -> str | None:
        """The batch whose metadata carries `key` (newest first, back to an hour before `since`)."""
        after = None
        while True:
            page = self.http.json("GET", "/batches?limit=100" + (f"&after={after}" if after else ""))
            data = page.get("data") or []
            for b in data:
                if (b.get("metadata") or {}).get(METADATA_KEY) == key:
                    return b["id"]
            if not page.get("has_more") or not data or min(int(b.get("created_at") or 0) for b in data) < since - 3600:
                return None
            after = page.get("last_id") or data[-1]["id"]

    def state(self, d: dict[str, Any]) -> BatchState:
        status = str(d.get("status", "unknown"))
        detail = ""
        if status == "failed":
            errs = (d.get("errors") or {}).get("data") or []
            detail = "; ".join(str(e.get("message", "")) for e in errs[:3])
        return BatchState(status, ended=status in ("completed", "expired", "cancelled", "failed"),
                          counts=dict(d.get("request_counts") or {}), unprocessed=UNPROCESSED.get(status, "expired"),
                          detail=detail, raw=d)

    def status(self, batch_id: str) -> BatchState:
        return self.state(self.http.json("GET", f"/batches/{batch_id}"))

    def results(self, st: BatchState) -> list[LineResult]:
        out: list[LineResult] = []
        for field in ("output_file_id", "error_file_id"):
            fid = (st.raw or {}).get(field)
            if fid:
                out.extend(parse_openai_output(self.http.call("GET", f"/files/{fid}/content")))
        return out

    def cancel(self, batch_id: str) -> BatchState:
        return self.state(self.http.json("POST", f"/batches/{batch_id}/cancel", {}))

