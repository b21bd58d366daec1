"""The openai backend against the real embedded teacher (llama.cpp server over HTTP)."""

from __future__ import annotations

import pytest

from pipeline.config import TeacherSection
from pipeline.teacher import TeacherFactory
from pipeline.teacher.base import ChatRequest, Sampling
from pipeline.teacher.openai_backend import OpenAIBackend

pytestmark = pytest.mark.teacher


def ask(text: str, **kw) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], record_id=text, purpose="test", **kw)


def test_answers_in_order_with_usage_and_seeded_sampling(openai_teacher_config):
    t = OpenAIBackend(openai_teacher_config, seed=3)
    s = Sampling(temperature=0.9, max_tokens=12)
    try:
        out = t.chat([ask("Name one fruit.", sampling=s), ask("Name one colour.", sampling=s),
                      ask("Name one fruit.", sampling=s)])
        again = t.chat([ask("Name one fruit.", sampling=s)])
    finally:
        t.close()
    assert all(c.ok for c in out + again)
    assert all(c.text.strip() and c.finish_reason in ("stop", "length") for c in out)
    assert all(c.usage.prompt_tokens > 0 and 0 < c.usage.completion_tokens <= 12 for c in out)
    # Same record, purpose and run seed -> same seed -> same sample at temperature 0.9.
    assert out[0].text == out[2].text == again[0].text
    assert t.stats.completion_tokens == sum(c.usage.completion_tokens for c in out + again)
    assert t.stats.sent == 4 and t.stats.errors == 0


def test_truncation_and_stop_reach_the_server(openai_teacher_config):
    t = OpenAIBackend(openai_teacher_config, seed=0)
    try:
        short, = t.chat([ask("Write a long story about a dragon.", sampling=Sampling(temperature=0.0, max_tokens=3))])
        full, stopped = t.chat([
            ask("Count from 1 to 9, separated by commas.", sampling=Sampling(temperature=0.0, max_tokens=40)),
            ask("Count from 1 to 9, separated by commas.", sampling=Sampling(temperature=0.0, max_tokens=40, stop=("5",)))])
    finally:
        t.close()
    assert short.truncated and short.usage.completion_tokens == 3
    assert "5" in full.text                       # the control: without the stop string it goes on
    assert stopped.ok and "5" not in stopped.text and full.text.startswith(stopped.text.rstrip())


def test_model_discovered_and_cached_through_make_teacher(teacher_server, tmp_path):
    sec = TeacherSection(backend="openai", base_url=teacher_server, concurrency=2)  # no model: asks /models
    t = TeacherFactory(sec, tmp_path, 1).build()
    try:
        assert t.model == "smollm2-135m-instruct"
        first = t.chat([ask("Say yes.", sampling=Sampling(max_tokens=4))])
        second = t.chat([ask("Say yes.", sampling=Sampling(max_tokens=4))])
    finally:
        t.close()
    assert first[0].ok and not first[0].cached
    assert second[0].cached and second[0].text == first[0].text and t.stats.sent == 1
