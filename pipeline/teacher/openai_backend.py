"""The `openai` backend: any OpenAI-compatible chat-completions server.

A request with a raw `prompt` (base.completion_request) goes to the same
server's `/v1/completions` instead, with `logprobs` as the legacy integer; its
legacy logprobs (tokens, token_logprobs, top_logprobs as {token: logprob}) come
back in the chat shape (`logprobs.content`), so a caller reads one shape.

Transport: aiohttp with one shared ClientSession (one keep-alive connection
pool of `concurrency` connections) on a private event loop, driven by the
synchronous `chat()`; the loop runs in a thread of its own, so chat() calls
from several threads overlap (Self-Instruct's in-flight window). We do not
use the `openai` SDK here: per request it builds pydantic models for the
request and the reply and goes through httpx, which costs several times the
client CPU of posting pre-serialised JSON bytes and parsing the reply with
`json.loads` (see scripts/bench_teacher.py for the side-by-side figures). At
thousands of requests a shard that CPU is the client's ceiling.

`chat()` runs `concurrency` workers over the request list, on the backend's
one event loop (a thread of its own), so several threads may call `chat` at
once (the runner's overlapping shards): all calls share `concurrency` request
slots (slots.py), the oldest call's requests first. Each request is
retried with full-jitter exponential backoff on 429 (Retry-After honoured),
5xx, timeouts, dropped connections and 200 replies that are not a chat
completion. A request that still fails comes back as a Completion carrying a
typed TeacherError; other requests are unaffected. If no request of a call
could even connect, `chat()` raises TeacherUnavailable (a stage should stop,
not drop every row). Every attempt holds a ticket of the `limiter` (limits.py:
the section's rpm/tpm, or the Ray cluster's permits) while it is in flight.

The API key is read from the environment variable named in the config, sent
only in the Authorization header, and scrubbed from every error message; it
is never stored on the object under a printable attribute or in its repr.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import random
import threading
from typing import Any, Callable

import aiohttp

from ..errors import TeacherUnavailable
from .base import ChatRequest, Completion, OnDone, TeacherError, TeacherUsage, Usage, derive_seed
from .limits import Limiter, LocalLimiter, backoff_delay, estimate_tokens, parse_retry_after
from .reasoning import FIELDS as REASONING_FIELDS
from .reasoning import split_message
from .request_body import openai_body
from .slots import Slots, caller_rank

log = logging.getLogger(__name__)

# fault kinds that a dead or restarting server produces (checked with `revive`)
SERVER_FAULTS = ("connection", "unavailable", "timeout", "server_error")


class _Fault(Exception):
    def __init__(self, kind: str, message: str, retryable: bool = True, retry_after: float | None = None):
        super().__init__(message)
        self.kind, self.message, self.retryable, self.retry_after = kind, message, retryable, retry_after


class OpenAIBackend:
    backend = "openai"
    concurrent_calls = True  # one loop and one set of request slots for every calling thread

    def __init__(self, section, *, seed: int = 0, backoff_base: float = 0.5, backoff_cap: float = 30.0,
                 endpoints: list[str] | None = None, revive: Callable[[int], bool] | None = None,
                 extra_body: dict[str, Any] | None = None, limiter: Limiter | None = None):
        """`endpoints`: several servers of one model (default: `section.base_url`); each request
        worker posts to the endpoint with the fewest workers, over every call running (within one
        call: worker k to endpoint k mod n). `revive(k)`, for supervised server children, is
        called after every failed attempt on endpoint k: it restarts a dead child and says
        whether the endpoint can still answer (False: give up on it, do not retry).
        `extra_body`: server-specific fields added to every request body. `limiter`: replaces
        the section's rpm / tpm (`LocalLimiter.of(section)`)."""
        if not (endpoints or section.base_url):
            raise TeacherUnavailable(
                "teacher.backend = 'openai' needs teacher.base_url (e.g. http://127.0.0.1:8765/v1 "
                "after `distill teacher serve`)")
        self.endpoints = [u.rstrip("/") for u in (endpoints or [section.base_url])]
        self.base_url = self.endpoints[0]
        self.endpoint = self.base_url  # the response cache's endpoint identity
        self.revive = revive
        self.extra_body = dict(extra_body or {})
        self.gone: set[int] = set()  # endpoints whose server `revive` gave up on
        self._busy = [0] * len(self.endpoints)  # request workers per endpoint (on the loop)
        self.api_key_env = section.api_key_env
        self.concurrency = section.concurrency
        self.max_retries = section.max_retries
        self.timeout_s = section.timeout_s
        self.run_seed = seed
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.stats = TeacherUsage()
        self.limiter = limiter if limiter is not None else LocalLimiter.of(section)
        self._jitter = random.Random(seed)  # backoff jitter only; never affects outputs
        self._sleep = asyncio.sleep  # replaceable in tests, to see the waits without waiting
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._slots: Slots | None = None  # `concurrency` request slots shared by every chat call (slots.py)
        self._calls = itertools.count()   # call order: an older call's requests get freed slots first
        try:
            self.model = section.model or self._discover_model()
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"OpenAIBackend(base_url={self.base_url!r}, model={self.model!r}, concurrency={self.concurrency})"

    # -- plumbing -----------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            h["Authorization"] = f"Bearer {key}"
        return h

    def _scrub(self, text: str) -> str:
        key = os.environ.get(self.api_key_env)
        return text.replace(key, "***") if key else text

    def _run(self, coro):
        """Run `coro` on the backend's one event loop (its own thread) and wait for it: several threads
        may call `chat` at once and share the session, its connections and the request slots."""
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, name="openai-backend", daemon=True)
                self._thread.start()
        if threading.current_thread() is self._thread:
            raise RuntimeError("OpenAIBackend.chat called from its own event loop (an on_done callback?)")
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result()
        except BaseException:
            fut.cancel()  # the caller gave up (Ctrl-C, a raise): its requests must not run on unattended
            raise

    async def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.concurrency, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector, headers=self._headers(), trust_env=True,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        return self._session

    def _discover_model(self) -> str:
        async def get() -> str:
            session = await self._ensure_session()
            try:
                async with session.get(self.base_url + "/models") as r:
                    raw, status = await r.read(), r.status
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                raise TeacherUnavailable(self._unreachable(e)) from None
            if status in (401, 403):
                raise TeacherUnavailable(self._scrub(
                    f"{self.base_url}/models answered HTTP {status}: check the key in ${self.api_key_env}"))
            if status != 200:
                raise TeacherUnavailable(self._scrub(
                    f"{self.base_url}/models answered HTTP {status}: is teacher.base_url an OpenAI-compatible "
                    "/v1 endpoint? (or set teacher.model)"))
            try:
                return json.loads(raw)["data"][0]["id"]
            except (ValueError, KeyError, IndexError, TypeError):
                raise TeacherUnavailable(
                    f"{self.base_url}/models lists no model; set teacher.model (or --model)") from None
        return self._run(get())

    def _unreachable(self, e: BaseException | str) -> str:
        return self._scrub(
            f"teacher at {self.base_url} is unreachable ({e}); start it (`distill teacher serve` for the "
            "embedded one) or fix teacher.base_url")

    def close(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            try:
                if self._session is not None:
                    self._run(self._session.close())
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(10)
                if not self._loop.is_running():
                    self._loop.close()
        self._session = None

    # -- requests -----------------------------------------------------------

    def seed_for(self, req: ChatRequest) -> int:
        return derive_seed(self.run_seed, req.record_id, req.purpose, req.sample_index)

    def _body(self, req: ChatRequest, seed: int) -> bytes:
        body = openai_body(self.model, req, seed)
        body.update(self.extra_body)
        return json.dumps(body, ensure_ascii=False).encode("utf-8")

    def chat(self, requests: list[ChatRequest], on_done: OnDone | None = None) -> list[Completion]:
        """Completions in request order; `on_done(i, completion)` is called as each one finishes."""
        if not requests:
            return []
        out = self._run(self._chat(requests, on_done, caller_rank()))
        if all(c.error is not None and c.error.kind == "unavailable" and c.error.retryable for c in out):
            raise TeacherUnavailable(self._unreachable(out[0].error.message))
        return out

    async def _chat(self, requests: list[ChatRequest], on_done: OnDone | None, rank: int = 0) -> list[Completion]:
        session = await self._ensure_session()
        if self._slots is None:
            self._slots = Slots(self.concurrency)
        slots, priority = self._slots, (rank, next(self._calls))
        out: list[Completion | None] = [None] * len(requests)
        todo = iter(range(len(requests)))
        self.stats.requests += len(requests)

        busy = self._busy

        async def worker() -> None:
            # the least busy server, over every chat() call running (one per worker of a single call, in turn)
            endpoint = min(range(len(busy)), key=busy.__getitem__)
            busy[endpoint] += 1
            try:
                await work(endpoint)
            finally:
                busy[endpoint] -= 1

        async def work(endpoint: int) -> None:
            for i in todo:
                try:
                    async with slots.hold(priority):
                        c = await self._send(session, requests[i], endpoint)
                except Exception as e:  # a bug must not take the other requests down
                    log.exception("unexpected error in teacher request %d", i)
                    c = Completion(text=None, error=TeacherError("invalid_response", self._scrub(repr(e)), 1, False))
                if c.error is not None:
                    self.stats.errors += 1
                out[i] = c
                if on_done is not None:
                    on_done(i, c)

        tasks = [asyncio.ensure_future(worker()) for _ in range(min(self.concurrency, len(requests)))]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            # `on_done` raised (a tripped breaker), or the caller gave up: the requests still in flight are
            # abandoned, not left running on the loop to call back later.
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return out  # type: ignore[return-value]

    async def _send(self, session: aiohttp.ClientSession, req: ChatRequest, endpoint: int = 0) -> Completion:
        body = self._body(req, self.seed_for(req))
        if endpoint in self.gone:
            live = [k for k in range(len(self.endpoints)) if k not in self.gone]
            if not live:
                return Completion(text=None, error=TeacherError("unavailable", "every server is gone", 0, False),
                                  attempts=0, model=self.model)
            endpoint = live[endpoint % len(live)]
        text_completion = req.prompt is not None
        url = self.endpoints[endpoint] + ("/completions" if text_completion else "/chat/completions")
        lim = self.limiter
        est = estimate_tokens(req.messages, req.sampling.max_tokens) if lim is not None and lim.needs_tokens else 0
        attempt = 0
        while True:
            attempt += 1
            ticket = await lim.acquire(est) if lim is not None else None
            self.stats.sent += 1
            c: Completion | None = None
            fault: _Fault | None = None
            try:
                c = await self._post(session, body, url, text_completion)
            except _Fault as f:
                fault = f
            finally:  # before any backoff: a waiting request holds no permit
                if lim is not None:
                    lim.release(ticket, c.usage.prompt_tokens + c.usage.completion_tokens if c is not None else 0)
            if fault is not None:
                self.stats.count_fault(fault.kind)
                if self.revive is not None and fault.kind in SERVER_FAULTS and not self.revive(endpoint):
                    self.gone.add(endpoint)
                    return Completion(text=None, error=TeacherError("unavailable", f"server is gone: {fault.message}",
                                                                    attempt, False), attempts=attempt, model=self.model)
                if not fault.retryable or attempt > self.max_retries:
                    return Completion(text=None, error=TeacherError(fault.kind, fault.message, attempt, fault.retryable),
                                      attempts=attempt, model=self.model)
                self.stats.retries += 1
                await self._sleep(backoff_delay(attempt - 1, self.backoff_base, self.backoff_cap,
                                                  self._jitter, fault.retry_after))
                continue
            c.attempts = attempt
            self.stats.prompt_tokens += c.usage.prompt_tokens
            self.stats.completion_tokens += c.usage.completion_tokens
            return c

    async def _post(self, session: aiohttp.ClientSession, body: bytes, url: str,
                    text_completion: bool = False) -> Completion:
        try:
            async with session.post(url, data=body) as resp:
                raw = await resp.read()
                status = resp.status
                headers = resp.headers
        except asyncio.TimeoutError:
            raise _Fault("timeout", f"no answer within {self.timeout_s:g}s") from None
        except aiohttp.ClientConnectorError as e:
            raise _Fault("unavailable", self._scrub(str(e))) from None
        except (aiohttp.ClientError, OSError) as e:  # dropped connection, broken payload
            raise _Fault("connection", self._scrub(f"{type(e).__name__}: {e}")) from None
        if status == 200:
            return self._parse(raw, text_completion)
        detail = self._scrub(f"HTTP {status}: {raw[:300].decode('utf-8', 'replace')}")
        if status == 429:
            raise _Fault("rate_limited", detail, retry_after=parse_retry_after(headers))
        if status >= 500:
            raise _Fault("server_error", detail, retry_after=parse_retry_after(headers))
        if status == 408:
            raise _Fault("timeout", detail)
        if status in (401, 403):
            raise _Fault("auth", detail + f" (check the key in ${self.api_key_env})", retryable=False)
        if status in (404, 405):  # no chat-completions route: not an OpenAI-compatible server, or a wrong base_url
            raise _Fault("invalid_response", detail + f" (is {self.base_url} an OpenAI-compatible /v1 endpoint?)",
                         retryable=False)
        raise _Fault("bad_request", detail, retryable=False)

    def _parse(self, raw: bytes, text_completion: bool = False) -> Completion:
        what = "text completion" if text_completion else "chat completion"
        try:
            data = json.loads(raw)
            choice = data["choices"][0]
            message = {} if text_completion else choice["message"]
            text = choice["text"] if text_completion else message["content"]
            if text is None and any(isinstance(message.get(f), str) for f in REASONING_FIELDS):
                text = ""  # a reasoning parser's reply cut off while thinking: all reasoning, no answer
            if not isinstance(text, str):
                raise TypeError(f"{what} text is not a string")
            lp = choice.get("logprobs")
            logprobs = legacy_logprobs(lp) if text_completion else lp.get("content") if isinstance(lp, dict) else None
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            snippet = self._scrub(raw[:120].decode("utf-8", "replace"))
            raise _Fault("invalid_response", f"200 reply is not a {what} ({type(e).__name__}): {snippet!r}") from None
        usage = data.get("usage") or {}
        text, reasoning = split_message(message, text)
        return Completion(
            text=text, reasoning=reasoning, finish_reason=choice.get("finish_reason"),
            usage=Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)),
            logprobs=logprobs, model=data.get("model") or self.model)


def legacy_logprobs(lp: Any) -> list[dict[str, Any]] | None:
    """/v1/completions logprobs ({tokens, token_logprobs, top_logprobs: [{token: logprob}]}) in the chat
    shape, one {token, logprob, top_logprobs: [{token, logprob}]} per generated position."""
    if not lp:
        return None
    tops = lp.get("top_logprobs") or []
    out = []
    for i, (token, logprob) in enumerate(zip(lp["tokens"], lp["token_logprobs"])):
        top = tops[i] if i < len(tops) and tops[i] else {}
        out.append({"token": token, "logprob": logprob,
                    "top_logprobs": [{"token": t, "logprob": v} for t, v in top.items()]})
    return out
