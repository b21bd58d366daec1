"""The OpenAI-compatible request body of one ChatRequest: what the online openai backend posts and
what a batch file line carries (reads a ChatRequest, writes a JSON-ready dict; no I/O)."""

from __future__ import annotations

from typing import Any

from .base import ChatRequest


def openai_body(model: str, req: ChatRequest, seed: int) -> dict[str, Any]:
    """/v1/chat/completions fields, or /v1/completions ones for a raw-prompt request (`req.prompt`)."""
    s = req.sampling
    body: dict[str, Any] = {"model": model, "temperature": s.temperature, "top_p": s.top_p,
                            "max_tokens": s.max_tokens, "seed": seed}
    if req.prompt is not None:
        body["prompt"] = req.prompt
    else:
        body["messages"] = list(req.messages)
    if s.presence_penalty:
        body["presence_penalty"] = s.presence_penalty
    if s.frequency_penalty:
        body["frequency_penalty"] = s.frequency_penalty
    if s.stop:
        body["stop"] = list(s.stop)
    if s.logprobs is not None and req.prompt is not None:
        body["logprobs"] = s.logprobs  # /v1/completions: the legacy integer
    elif s.logprobs is not None:
        body["logprobs"] = True
        body["top_logprobs"] = s.logprobs
    return body
