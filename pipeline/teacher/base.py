"""The Teacher protocol: a list of chat requests in, completions out in the same order.

A request may instead carry a raw `prompt` (`completion_request`): a text
completion, sent to `/v1/completions` (openai) or `LLM.generate` (vllm), for
models that were trained on a plain prompt format (score's Deita scorers).
Its `messages` then hold the same text as one user turn, so every layer that
measures a request (length guard, limiter, budget) reads it unchanged.

Every backend (openai, llamacpp, vllm, the scripted fake used in unit tests)
and every layer around one (budget, cache) implements `Teacher.chat`. A
completion either carries text, finish reason and token usage, or a typed
`TeacherError`; a backend never raises for one bad request and never drops or
reorders requests. A teacher counts its work in a `TeacherUsage`, which shard
markers and manifests record under the `teacher_*` names.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Protocol


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 512
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: tuple[str, ...] = ()
    logprobs: int | None = None  # top-k logprobs per token, when the backend supports it

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[dict[str, str], ...] | list[dict[str, str]]
    sampling: Sampling = Sampling()
    record_id: str = ""   # the row the request serves: part of the per-request seed
    purpose: str = ""     # e.g. "answer", "evolve:deepening", "judge:quality"
    sample_index: int = 0  # distinguishes repeated samples of one prompt
    prompt: str | None = None  # a raw text-completion prompt instead of a chat (see `completion_request`)


def completion_request(prompt: str, sampling: Sampling, record_id: str = "", purpose: str = "") -> ChatRequest:
    """A text completion of `prompt`, as-is (no chat template); `messages` mirror it for the layers."""
    return ChatRequest(messages=({"role": "user", "content": prompt},), sampling=sampling, record_id=record_id,
                       purpose=purpose, prompt=prompt)


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


ERROR_KINDS = (
    "timeout", "rate_limited", "server_error", "connection", "invalid_response", "auth",
    "bad_request", "too_long", "unavailable", "budget_exhausted", "budget_paused",
)

# Failures whose cause lies outside the row: the teacher is down, refuses the key, stalls, or does not
# speak the protocol (a 200 that is not a chat completion, a 404/405 from a server that is not
# OpenAI-compatible). A row that failed so is *unanswered*: never a drop; its shard is not marked done
# and the next run asks again. Everything else (bad_request: 400/413/422, too_long: over the context
# window, and the stages' own verdicts: refusal, truncation, parse failures, filters) is the row's own
# doing and a drop with a reason. `budget_exhausted` (a refresh night's cap, see budget.py) stays a drop:
# a night is never resumed, and it publishes what its budget made. `budget_paused` (`distill run`'s
# --max-cost) is outside: the rerun with more room asks again.
OUTSIDE_KINDS = frozenset({"auth", "connection", "unavailable", "timeout", "rate_limited", "server_error",
                           "invalid_response", "budget_paused"})


@dataclass
class TeacherError:
    kind: str        # one of ERROR_KINDS
    message: str     # never contains an API key
    attempts: int = 1
    retryable: bool = True

    @property
    def outside(self) -> bool:
        """The cause lies outside the row (OUTSIDE_KINDS): the row is unanswered, not dropped."""
        return self.kind in OUTSIDE_KINDS


@dataclass
class Completion:
    text: str | None
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    logprobs: list[dict[str, Any]] | None = None
    error: TeacherError | None = None
    cached: bool = False
    attempts: int = 1
    model: str | None = None
    reasoning: str | None = None  # the reasoning trace, kept out of `text` (reasoning.py says where it is found)

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"

    @property
    def unanswered(self) -> bool:
        """Failed for a reason outside the row (`TeacherError.outside`): ask again on the next run."""
        return self.error is not None and self.error.outside


def unanswered_reasons(completions) -> dict[str, int]:
    """Error kind -> count over the unanswered completions among `completions` (None entries skipped)."""
    out: dict[str, int] = {}
    for c in completions:
        if c is not None and c.unanswered:
            out[c.error.kind] = out.get(c.error.kind, 0) + 1
    return out


# the counters a shard marker records, as `teacher_<name>` (what the runner and the report read)
MARKED = ("requests", "sent", "cache_hits", "errors", "retries", "prompt_tokens", "completion_tokens")
MARKED_FAULTS = ("batch_",)  # fault kinds a marker also carries: batch_retried_<reason>, batch_failed_<reason>


@dataclass
class TeacherUsage:
    """A teacher's counters: live on `teacher.stats`, or a snapshot, or the difference of two."""

    requests: int = 0          # requests asked of chat()
    sent: int = 0              # HTTP/engine calls actually made (retries included)
    cache_hits: int = 0
    errors: int = 0            # completions returned with an error
    retries: int = 0
    faults: dict[str, int] = field(default_factory=dict)  # fault kind -> times seen (retried or not)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def count_fault(self, kind: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def copy(self) -> "TeacherUsage":
        return dataclasses.replace(self, faults=dict(self.faults))

    def delta(self, before: "TeacherUsage | None") -> "TeacherUsage":
        """The counters' growth since `before` (all of them when there was no teacher before)."""
        d = TeacherUsage(**{k: getattr(self, k) - (getattr(before, k) if before else 0) for k in MARKED})
        d.faults = {k: v - (before.faults.get(k, 0) if before else 0) for k, v in self.faults.items()
                    if k.startswith(MARKED_FAULTS)}
        return d

    def marker(self, *names: str) -> dict[str, int]:
        """The counters (all of MARKED, or `names`) under their marker names, `teacher_<name>`; with no
        `names`, also the MARKED_FAULTS counts (a batch teacher's retries and failures by reason)."""
        m = {f"teacher_{k}": int(getattr(self, k)) for k in names or MARKED}
        if not names:
            m.update({f"teacher_{k}": int(v) for k, v in self.faults.items() if k.startswith(MARKED_FAULTS) and v})
        return m

    @classmethod
    def from_marker(cls, marker: Mapping[str, Any]) -> "TeacherUsage":
        """The counters a marker holds, under `teacher_<name>` or (older folders) the bare name."""
        return cls(**{k: int(marker.get(f"teacher_{k}", marker.get(k, 0))) for k in MARKED})


OnDone = Callable[[int, Completion], None]


class Teacher(Protocol):
    backend: str
    model: str
    stats: TeacherUsage

    def chat(self, requests: list[ChatRequest], on_done: OnDone | None = None) -> list[Completion]:
        """Completions in request order; `on_done(i, completion)` as each one is final (the cache
        stores answers as they arrive: a killed run keeps what it was sent back)."""

    def close(self) -> None: ...


class TeacherLayer:
    """A teacher around another (breaker, length guard, budget, cache): it answers for the inner one, so its
    backend, model, endpoint and counters are the inner one's; `close` closes the inner one."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.backend = inner.backend
        self.model = inner.model
        self.endpoint = getattr(inner, "endpoint", None)
        self.stats = inner.stats
        self.concurrent_calls = getattr(inner, "concurrent_calls", False)  # chat may be called from threads at once

    def close(self) -> None:
        self.inner.close()


def derive_seed(run_seed: int, record_id: str, purpose: str, sample_index: int = 0) -> int:
    """Per-request seed: reruns reproduce, different records and purposes differ."""
    h = hashlib.sha256(f"{run_seed}\x1f{record_id}\x1f{purpose}\x1f{sample_index}".encode())
    return int.from_bytes(h.digest()[:4], "big") & 0x7FFFFFFF


def request_key(model: str, req: ChatRequest, seed: int | None, endpoint: str = "") -> str:
    """Cache key: a hash of the endpoint's identity (`endpoint_identity`), model, messages, sampling
    params, sample index and seed: another server with the same model name never shares answers. A text
    completion's `prompt` is part of it too (only when set: the keys of chat requests stay what they were)."""
    fields: dict[str, Any] = {"endpoint": endpoint, "model": model, "messages": list(req.messages),
                              "sampling": req.sampling.to_dict(), "sample_index": req.sample_index, "seed": seed}
    if req.prompt is not None:
        fields["prompt"] = req.prompt
    payload = json.dumps(fields, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def endpoint_identity(teacher: Any) -> str:
    """Who answers: the backend plus its server's base_url (openai) or its model path (local engines)."""
    where = getattr(teacher, "endpoint", None) or getattr(teacher, "base_url", None) or ""
    return f"{teacher.backend}:{where}" if where else f"{teacher.backend}:{teacher.model}"
