"""The batch line format and what one line's outcome is: OpenAI's Batch API and vLLM `run-batch` read the same JSONL.

An input line is `{"custom_id", "method": "POST", "url": "/v1/chat/completions",
"body": <a chat-completions request>}`; an output line is `{"id", "custom_id",
"response": {"status_code", "request_id", "body": <a chat completion>},
"error": null | {"code", "message"}}`. The `custom_id` is our request key
(base.request_key), the response cache's key, so a result is matched to its
request by key and never by position (providers return lines out of order).

`LineResult` is one line's outcome, whatever the provider: succeeded (text,
finish reason, usage), errored (an error kind and whether a new batch may
help), or expired / canceled (never processed). The batch teacher keeps
results as JSONL of `LineResult.to_json()` (batch_journal.py). `chunks` cuts
lines into batches within a provider's request and byte limits. Reads and
writes nothing on disk.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Iterator

from ..errors import ConfigError
from .base import ChatRequest, Completion, TeacherError, Usage
from .request_body import openai_body

CHAT_URL = "/v1/chat/completions"
# line statuses; "expired" and "canceled" lines were never processed (nothing paid), "errored" ones failed
STATUSES = ("succeeded", "errored", "expired", "canceled")


@dataclass
class LineResult:
    custom_id: str
    status: str                       # one of STATUSES
    text: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error_kind: str | None = None     # a base.ERROR_KINDS kind, for errored lines
    message: str = ""
    retryable: bool = True            # a new batch may answer it (false: the row's own fault, e.g. HTTP 400)

    @property
    def ok(self) -> bool:
        return self.status == "succeeded" and self.text is not None

    @property
    def reason(self) -> str:
        """What a retry of this line is counted under: expired, canceled, or errored:<kind>."""
        return self.status if self.status != "errored" else f"errored_{self.error_kind or 'unknown'}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> "LineResult":
        return cls(**json.loads(line))

    def completion(self, model: str, *, cached: bool = False) -> Completion:
        if self.ok:
            return Completion(text=self.text, finish_reason=self.finish_reason, model=model, cached=cached,
                              usage=Usage(self.prompt_tokens, self.completion_tokens))
        if self.status == "errored":
            kind, msg = self.error_kind or "server_error", self.message
        else:  # never processed within the provider's window: the teacher did not answer in time, not the row
            kind, msg = "timeout", f"batch line {self.status} before it was processed"
        return Completion(text=None, model=model, error=TeacherError(kind, msg or self.status, 1, self.retryable))


def chat_body(model: str, req: ChatRequest, seed: int) -> dict[str, Any]:
    """The chat-completions request body of `req` (the same fields the online openai backend sends)."""
    if req.prompt is not None:
        raise ConfigError("batch teachers send chat requests only; Deita's scorers (text completions) need an "
                          "online judge: set [score.judge_teacher] backend = \"openai\" or \"vllm\"")
    return openai_body(model, req, seed)


def openai_line(custom_id: str, body: dict[str, Any]) -> bytes:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": CHAT_URL, "body": body},
                      ensure_ascii=False).encode("utf-8") + b"\n"


def custom_ids(lines: Iterable[bytes | str]) -> list[str]:
    return [json.loads(raw)["custom_id"] for raw in lines if raw.strip()]


def status_kind(status: int) -> tuple[str, bool]:
    """(error kind, retryable) of a line answered with HTTP `status`."""
    if status == 429:
        return "rate_limited", True
    if status >= 500:
        return "server_error", True
    if status == 408:
        return "timeout", True
    if status in (401, 403):
        return "auth", True
    return "bad_request", False


def parse_openai_output(raw: bytes | str) -> Iterator[LineResult]:
    """The LineResults of an OpenAI / vLLM output or error file (a line that is not JSON is skipped: its
    request then counts as never answered and is asked again)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            cid = d["custom_id"]
        except (ValueError, KeyError, TypeError):
            continue
        yield openai_result(cid, d)


def openai_result(cid: str, d: dict[str, Any]) -> LineResult:
    resp = d.get("response") or {}
    err = d.get("error")
    status = int(resp.get("status_code") or 0)
    body = resp.get("body") or {}
    if status == 200 and not err:
        try:
            choice = body["choices"][0]
            text = choice["message"]["content"]
            usage = body.get("usage") or {}
            return LineResult(cid, "succeeded", text=text, finish_reason=choice.get("finish_reason"),
                              prompt_tokens=int(usage.get("prompt_tokens") or 0),
                              completion_tokens=int(usage.get("completion_tokens") or 0))
        except (KeyError, IndexError, TypeError):
            return LineResult(cid, "errored", error_kind="invalid_response", message="a 200 line without a choice")
    if isinstance(err, dict) and err.get("code") == "batch_expired":
        return LineResult(cid, "expired", message=str(err.get("message", "")))
    if isinstance(err, dict) and err.get("code") == "batch_cancelled":
        return LineResult(cid, "canceled", message=str(err.get("message", "")))
    kind, retryable = status_kind(status) if status else ("server_error", True)
    detail = body.get("error") if isinstance(body, dict) else None
    msg = json.dumps(detail or err or body, ensure_ascii=False)[:300]
    return LineResult(cid, "errored", error_kind=kind, message=f"HTTP {status or '-'}: {msg}", retryable=retryable)


def chunks(lines: list[bytes], max_requests: int, max_bytes: int, overhead: int = 0) -> Iterator[list[bytes]]:
    """`lines` in order, cut into runs of at most `max_requests` lines and `max_bytes` bytes (with
    `overhead` bytes per line of the provider's framing). A single line over `max_bytes` goes alone."""
    cur: list[bytes] = []
    size = 0
    for line in lines:
        n = len(line) + overhead
        if cur and (len(cur) >= max_requests or size + n > max_bytes):
            yield cur
            cur, size = [], 0
        cur.append(line)
        size += n
    if cur:
        yield cur


ENDED = ("completed", "expired", "cancelled", "failed", "ended")  # provider states after which nothing changes


@dataclass
class BatchState:
    """One batch as its provider reports it: `status` in the provider's words, `ended` once nothing will
    change, `counts` its request counts, `unprocessed` what a line missing from its results counts as."""
    status: str
    ended: bool = False
    counts: dict[str, int] | None = None
    unprocessed: str = "expired"     # expired, canceled, or errored (a batch that failed as a whole)
    detail: str = ""
    raw: dict[str, Any] | None = None
