"""The llamacpp backend (the embedded default): SmolLM2 in supervised server children, one client path."""

from __future__ import annotations

import pytest

from pipeline.config import TeacherSection
from pipeline.errors import TeacherUnavailable
from pipeline.teacher import TeacherFactory, make_backend
from pipeline.teacher.base import ChatRequest, Sampling

pytestmark = pytest.mark.teacher


@pytest.fixture(scope="module")
def llama():
    t = make_backend(TeacherSection(backend="llamacpp", n_ctx=512, n_threads=2), seed=4)
    yield t
    t.close()


def ask(text: str, **kw) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], record_id=text, purpose="test", **kw)


def test_answers_with_usage_and_per_request_seed(llama):
    s = Sampling(temperature=0.9, max_tokens=10)
    out = llama.chat([ask("Name one animal.", sampling=s), ask("Name one tool.", sampling=s),
                      ask("Name one animal.", sampling=s)])
    assert llama.model == "smollm2-135m-instruct"
    assert all(c.ok and c.text.strip() for c in out)
    assert all(c.usage.prompt_tokens > 0 and 0 < c.usage.completion_tokens <= 10 for c in out)
    assert out[0].text == out[2].text  # same (seed, record, purpose) -> same sample


def test_context_overflow_is_a_typed_error_not_an_exception(llama):
    out = llama.chat([ask("word " * 600, sampling=Sampling(max_tokens=8)),
                      ask("Say hi.", sampling=Sampling(max_tokens=4, temperature=0.0))])
    assert out[0].error.kind == "bad_request" and "context" in out[0].error.message
    assert out[1].ok and out[1].usage.completion_tokens <= 4
    assert llama.stats.faults.get("bad_request", 0) >= 1


def test_truncation_and_stop(llama):
    short, full, stopped = llama.chat([
        ask("Tell me a long story.", sampling=Sampling(temperature=0.0, max_tokens=3)),
        ask("Count from 1 to 9, separated by commas.", sampling=Sampling(temperature=0.0, max_tokens=40)),
        ask("Count from 1 to 9, separated by commas.", sampling=Sampling(temperature=0.0, max_tokens=40, stop=("5",)))])
    assert short.truncated
    assert "5" in full.text                       # the control: without the stop string it goes on
    assert stopped.ok and "5" not in stopped.text and full.text.startswith(stopped.text.rstrip())


def test_cached_in_process_teacher(tmp_path):
    sec = TeacherSection(backend="llamacpp", n_ctx=256, n_threads=2)
    t = TeacherFactory(sec, tmp_path, 2).build()
    try:
        a = t.chat([ask("Say yes.", sampling=Sampling(max_tokens=4))])
        b = t.chat([ask("Say yes.", sampling=Sampling(max_tokens=4))])
    finally:
        t.close()
    assert a[0].ok and b[0].cached and b[0].text == a[0].text and t.stats.sent == 1


def test_missing_gguf_is_a_one_line_error(tmp_path):
    with pytest.raises(TeacherUnavailable, match="not a GGUF file"):
        make_backend(TeacherSection(backend="llamacpp", model=str(tmp_path / "nope.gguf")))


def test_the_first_request_for_logprobs_restarts_the_children_with_logits_all(llama):
    # The children start without logits_all; a request for logprobs used to get none, silently.
    plain = llama.chat([ask("Name one colour.", sampling=Sampling(temperature=0.0, max_tokens=6))])[0]
    assert plain.ok and plain.logprobs is None and not llama.logits_all
    starts = [s.starts for s in llama.servers]
    out = llama.chat([ask("Name one colour.", sampling=Sampling(temperature=0.0, max_tokens=6, logprobs=5))])[0]
    assert out.ok and out.text == plain.text and llama.logits_all
    assert [s.starts for s in llama.servers] == [n + 1 for n in starts] and llama.restarts == 0
    assert out.logprobs and len(out.logprobs) == out.usage.completion_tokens
    assert all(len(p["top_logprobs"]) == 5 and p["logprob"] <= 0 for p in out.logprobs)
    again = llama.chat([ask("Name one tool.", sampling=Sampling(temperature=0.0, max_tokens=6, logprobs=5))])[0]
    assert again.ok and again.logprobs and [s.starts for s in llama.servers] == [n + 1 for n in starts]
