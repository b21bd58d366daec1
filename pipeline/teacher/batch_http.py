"""A small synchronous HTTP client for the batch providers' few control calls (upload, create, poll, download).

A batch backend makes a handful of calls a minute, so this is plain urllib,
not the online backend's aiohttp pool. `call` retries connection errors,
timeouts, 429 and 5xx with full-jitter backoff (limits.backoff_delay), up to
`retries` times, unless `once=True`: a create call is never repeated blindly
(the batch teacher looks the batch up instead, see batch_backend.py).
Persistent failure is TeacherUnavailable (exit 4) in one line, the API key
scrubbed; a 4xx is TeacherUnavailable too, naming the URL and the answer.
Reads and writes nothing on disk.
"""

from __future__ import annotations

import json
import os
import random
import time
import urllib.error
import urllib.request
import uuid
from typing import Any, Callable

from ..errors import TeacherUnavailable
from .limits import backoff_delay


class CallFailed(Exception):
    """A call that got no usable answer; `status` 0 when nothing answered at all."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class BatchHTTP:
    def __init__(self, base_url: str, headers: Callable[[], dict[str, str]], key_env: str, *,
                 timeout_s: float = 120.0, retries: int = 6, backoff_base: float = 0.5, backoff_cap: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep):
        self.base_url = base_url.rstrip("/")
        self.headers, self.key_env = headers, key_env
        self.timeout_s, self.retries = timeout_s, retries
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.sleep = sleep
        self.jitter = random.Random()

    def scrub(self, text: str) -> str:
        key = os.environ.get(self.key_env)
        return text.replace(key, "***") if key else text

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base_url + path

    def once(self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json") -> bytes:
        """One attempt; the body of a 200 answer, else CallFailed."""
        headers = dict(self.headers())
        if body is not None:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(self.url(path), data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            detail = e.read()[:300].decode("utf-8", "replace")
            raise CallFailed(e.code, self.scrub(f"HTTP {e.code}: {detail}")) from None
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            raise CallFailed(0, self.scrub(f"{type(e).__name__}: {getattr(e, 'reason', e)}")) from None

    def call(self, method: str, path: str, body: bytes | None = None, *, content_type: str = "application/json",
             once: bool = False) -> bytes:
        attempt = 0
        while True:
            try:
                return self.once(method, path, body, content_type)
            except CallFailed as e:
                transient = e.status == 0 or e.status == 429 or e.status >= 500
                if once or not transient or attempt >= self.retries:
                    raise TeacherUnavailable(self.scrub(
                        f"batch call {method} {self.url(path)} failed: {e.message}"
                        + (f" (check the key in ${self.key_env})" if e.status in (401, 403) else "")
                        + "; rerun when the provider answers (submitted batches are journaled, never resent)")
                    ) from None
                self.sleep(backoff_delay(attempt, self.backoff_base, self.backoff_cap, self.jitter))
                attempt += 1

    def json(self, method: str, path: str, payload: Any = None, **kw: Any) -> Any:
        body = None if payload is None else json.dumps(payload, ensure_ascii=False).encode("utf-8")
        raw = self.call(method, path, body, **kw)
        try:
            return json.loads(raw)
        except ValueError:
            raise TeacherUnavailable(f"batch call {method} {self.url(path)} answered with something that is not "
                                     f"JSON: {raw[:200]!r}") from None


def multipart(fields: dict[str, str], name: str, filename: str, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with `fields` and one file part: (body, content type)."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                 "Content-Type: application/jsonl\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
