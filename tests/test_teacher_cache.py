"""The SQLite response cache in front of the openai backend, counted at the server."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3

from faultserver import FaultServer

from pipeline.config import TeacherSection
from pipeline.teacher import TeacherFactory, cache_path
from pipeline.teacher.base import ChatRequest, Sampling
from pipeline.teacher.cache import CachedTeacher, ResponseCache


def req(content: str, **kw) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": content}], record_id=content, purpose="t", **kw)


def section(url: str, **kw) -> TeacherSection:
    return TeacherSection(backend="openai", base_url=url, model="fault-model", **{"max_retries": 0, **kw})


def test_second_identical_chat_is_all_hits(tmp_path):
    with FaultServer() as srv:
        reqs = [req(f"c{i}") for i in range(30)]
        t = TeacherFactory(section(srv.base_url), tmp_path, 5).build()
        try:
            assert isinstance(t, CachedTeacher)
            first = t.chat(reqs)
            assert sum(srv.received.values()) == 30
            second = t.chat(reqs)
        finally:
            t.close()
        assert sum(srv.received.values()) == 30          # nothing sent the second time
        assert all(not c.cached for c in first) and all(c.cached for c in second)
        assert [c.text for c in second] == [c.text for c in first] == [f"echo:c{i}" for i in range(30)]
        assert second[0].usage == first[0].usage and second[0].finish_reason == "stop"
        assert t.stats.requests == 60 and t.stats.cache_hits == 30 and t.stats.sent == 30

        # A new process (a rerun) reads the same file; another seed, sample or
        # sampling setting is another request.
        t2 = TeacherFactory(section(srv.base_url), tmp_path, 5).build()
        try:
            again = t2.chat(reqs[:3] + [req("c0", sample_index=1), req("c1", sampling=Sampling(temperature=0.1))])
        finally:
            t2.close()
        assert [c.cached for c in again] == [True, True, True, False, False]
        t3 = TeacherFactory(section(srv.base_url), tmp_path, 6).build()
        try:
            assert not t3.chat(reqs[:1])[0].cached
        finally:
            t3.close()
    assert cache_path(section("x"), tmp_path) == tmp_path / "teacher_cache.sqlite"
    assert sqlite3.connect(tmp_path / "teacher_cache.sqlite").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_errors_are_stored_but_retried_on_the_next_run(tmp_path):
    failing = {"flaky"}
    plan = lambda content, attempt: "500" if content in failing else "ok"  # noqa: E731
    with FaultServer(plan) as srv:
        sec = section(srv.base_url, cache_path=str(tmp_path / "c.sqlite"))
        t = TeacherFactory(sec, tmp_path / "unused", 1).build()
        try:
            out = t.chat([req("fine"), req("flaky")])
            assert out[0].ok and out[1].error.kind == "server_error"
            assert t.cache.counts() == {"ok": 1, "errors": 1}
            failing.clear()  # the server recovers
            out = t.chat([req("fine"), req("flaky")])
        finally:
            t.close()
    assert out[0].cached and not out[1].cached and out[1].text == "echo:flaky"
    assert srv.received["flaky"] == 2 and srv.received["fine"] == 1
    assert ResponseCache(tmp_path / "c.sqlite").counts() == {"ok": 2, "errors": 0}
    assert not (tmp_path / "unused" / "teacher_cache.sqlite").exists()


def test_cache_disabled_sends_every_time(tmp_path):
    with FaultServer() as srv:
        t = TeacherFactory(section(srv.base_url, cache=False), tmp_path, 1).build()
        try:
            t.chat([req("a")])
            t.chat([req("a")])
        finally:
            t.close()
    assert srv.received["a"] == 2 and not (tmp_path / "teacher_cache.sqlite").exists()


def _writer(path: str, worker: int, n: int) -> None:
    from pipeline.teacher.base import Completion, Usage
    cache = ResponseCache(path, batch_rows=7)
    for i in range(n):
        cache.put(f"{worker}-{i}", "m", Completion(text=f"t{worker}-{i}", usage=Usage(1, 2)))
    cache.close()


def test_several_processes_share_one_cache_file(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    ResponseCache(path).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 200)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    cache = ResponseCache(path)
    got = cache.get_many([f"{w}-{i}" for w in range(3) for i in range(200)])
    assert len(got) == 600 and got["2-199"].text == "t2-199" and got["2-199"].usage.completion_tokens == 2
    cache.close()
