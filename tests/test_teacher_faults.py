"""The openai backend against a loopback server that injects faults.

Every answer echoes its request's content, so each completion is matched to
its request: nothing lost, nothing duplicated, nothing swapped.
"""

from __future__ import annotations

import asyncio

import pytest
from faultserver import FaultServer

from pipeline.config import TeacherSection
from pipeline.teacher.base import ChatRequest, Sampling, derive_seed
from pipeline.teacher.limits import LocalLimiter, WindowLimiter
from pipeline.teacher.openai_backend import OpenAIBackend

# content -> actions for the first attempts; "ok" afterwards
SCRIPT = {
    **{f"q{i}": ["429"] for i in range(0, 5)},
    **{f"q{i}": ["500"] for i in range(5, 10)},
    **{f"q{i}": ["drop"] for i in range(10, 15)},
    **{f"q{i}": ["badjson"] for i in range(15, 18)},
    **{f"q{i}": ["nochoices"] for i in range(18, 20)},
    **{f"q{i}": ["slow"] for i in range(20, 22)},
    "q22": ["429", "500", "drop"],
}
N = 40


def scripted(content: str, attempt: int) -> str:
    if content == "always-500":
        return "500"
    if content == "bad-request":
        return "401echo"
    actions = SCRIPT.get(content, [])
    return actions[attempt - 1] if attempt <= len(actions) else "ok"


def req(content: str, **kw) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": content}], record_id=content, purpose="test", **kw)


class RecordingSleep:
    """Stands in for asyncio.sleep: records each wait, waits for nothing."""

    def __init__(self, clock=None):
        self.waits: list[float] = []
        self.clock = clock

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.clock is not None:
            self.clock.now += seconds
        await asyncio.sleep(0)


def backend(url: str, limiter=None, **section) -> OpenAIBackend:
    sec = TeacherSection(backend="openai", base_url=url, model="fault-model", cache=False,
                         **{"concurrency": 8, "max_retries": 4, "timeout_s": 0.5, **section})
    return OpenAIBackend(sec, seed=11, backoff_base=0.01, backoff_cap=0.05, limiter=limiter)


def test_faults_are_retried_and_counted_nothing_lost_or_duplicated():
    with FaultServer(scripted, slow_s=3.0, retry_after="2") as srv:
        t = backend(srv.base_url)
        sleep = RecordingSleep()
        t._sleep = sleep
        contents = [f"q{i}" for i in range(N)]
        try:
            out = t.chat([req(c) for c in contents])
        finally:
            t.close()
    assert [c.text for c in out] == [f"echo:{c}" for c in contents]
    assert all(c.ok and not c.cached for c in out)
    # Each content answered exactly once; every fault was retried, none double-counted.
    assert all(srv.answered[c] == 1 for c in contents) and sum(srv.answered.values()) == N
    assert t.stats.faults == {"rate_limited": 6, "server_error": 6, "connection": 6,
                              "invalid_response": 5, "timeout": 2}
    assert t.stats.retries == sum(t.stats.faults.values())
    assert t.stats.sent == sum(srv.received.values()) == N + t.stats.retries
    assert t.stats.requests == N and t.stats.errors == 0
    assert out[22].attempts == 4 and out[30].attempts == 1
    # Retry-After: 2 is a floor for the wait after each 429 (6 of them).
    assert sum(1 for w in sleep.waits if w >= 2.0) == 6
    assert t.stats.prompt_tokens == 7 * N


def test_request_failing_after_max_retries_is_a_typed_error_and_others_are_unaffected():
    with FaultServer(scripted) as srv:
        t = backend(srv.base_url, max_retries=3)
        t._sleep = RecordingSleep()
        try:
            out = t.chat([req("a"), req("always-500"), req("b"), req("bad-request"), req("c")])
        finally:
            t.close()
    assert [c.text for c in out[::2]] == ["echo:a", "echo:b", "echo:c"]
    err = out[1].error
    assert out[1].text is None and err.kind == "server_error" and err.attempts == 4 and "HTTP 500" in err.message
    assert srv.received["always-500"] == 4
    # A 401 is not retried: the credentials will not get better.
    assert out[3].error.kind == "auth" and out[3].error.outside and not out[3].error.retryable and srv.received["bad-request"] == 1
    assert t.stats.errors == 2 and t.stats.faults["server_error"] == 4


def test_per_request_seed_and_sampling_pass_through():
    with FaultServer() as srv:
        t = backend(srv.base_url)
        s = Sampling(temperature=0.3, top_p=0.9, max_tokens=7, presence_penalty=0.5,
                     frequency_penalty=0.25, stop=("###", "\n\n"), logprobs=2)
        try:
            out = t.chat([req("x", sampling=s), req("y", sample_index=3)])
        finally:
            t.close()
    body = srv.bodies["x"]
    assert body["seed"] == derive_seed(11, "x", "test", 0)
    assert srv.bodies["y"]["seed"] == derive_seed(11, "y", "test", 3) != body["seed"]
    assert {k: body[k] for k in ("temperature", "top_p", "max_tokens", "presence_penalty",
                                 "frequency_penalty", "stop", "logprobs", "top_logprobs")} == {
        "temperature": 0.3, "top_p": 0.9, "max_tokens": 7, "presence_penalty": 0.5,
        "frequency_penalty": 0.25, "stop": ["###", "\n\n"], "logprobs": True, "top_logprobs": 2}
    assert "logprobs" not in srv.bodies["y"] and "stop" not in srv.bodies["y"]
    assert out[0].logprobs[0]["token"] == "echo:x" and len(out[0].logprobs[0]["top_logprobs"]) == 2
    assert out[1].logprobs is None


def test_rpm_limit_spaces_requests_on_the_clock():
    class Clock:
        now = 1000.0

        def __call__(self):
            return self.now

    clock = Clock()
    with FaultServer() as srv:
        t = backend(srv.base_url, LocalLimiter(rpm=10, clock=clock, sleep=RecordingSleep(clock)), rpm=10, concurrency=4)
        t._sleep = t.limiter.sleep
        sends = []
        spend = t.limiter.rpm.spend
        t.limiter.rpm.spend = lambda amount: (sends.append(clock.now), spend(amount))[1]
        try:
            out = t.chat([req(f"r{i}") for i in range(25)])
        finally:
            t.close()
    assert all(c.ok for c in out)
    assert len(sends) == 25
    # Never more than 10 sends in any 60-second window, and 25 sends need > 2 windows.
    assert all(sum(1 for u in sends if s <= u < s + 60) <= 10 for s in sends)
    assert sends[-1] - sends[0] >= 120


def test_unreachable_server_raises_teacher_unavailable():
    from pipeline.errors import TeacherUnavailable
    from pipeline.teacher.server import free_port

    t = backend(f"http://127.0.0.1:{free_port()}/v1", max_retries=1)
    t._sleep = RecordingSleep()
    try:
        with pytest.raises(TeacherUnavailable, match="unreachable"):
            t.chat([req("a"), req("b")])
    finally:
        t.close()


def test_window_limiter_tokens_are_corrected_to_actual_usage():
    class Clock:
        now = 0.0

        def __call__(self):
            return self.now

    clock = Clock()
    lim = WindowLimiter(100, clock=clock)
    e = lim.spend(90)            # estimate (prompt + max_tokens)
    assert lim.delay(20) > 0     # would exceed the limit
    lim.correct(e, 30)           # the server reported 30 tokens
    assert lim.delay(20) == 0 and lim.used == 30
    clock.now = 61.0
    assert lim.used == 0         # out of the window
    lim.correct(e, 50)           # a late correction of an expired entry changes nothing
    assert lim.used == 0
    assert lim.delay(500) == 0   # a single oversized request goes alone when the window is empty
