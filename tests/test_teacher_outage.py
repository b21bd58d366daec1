"""A teacher that fails for reasons outside the rows: nothing is dropped, nothing unanswered is marked done.

`distill orca` runs as a subprocess against a loopback server (faultserver.py)
that turns to HTTP 401, or to a black hole (accepts, never answers), part way
through the run. The run must stop with exit 4 and one line, mark no shard
with an unanswered row done, write nothing to rejected/ as teacher_error and
no manifest. After the server is fixed, the same command finishes every row,
asking again at most the requests that were in flight (the server counts its
answers). Then the pieces: the ping before any work, the circuit breaker
(consecutive, and a rate over a window), the length guard, the cache key's
endpoint, a cache that cannot be opened, and `distill teacher ping` on 5xx.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from faultserver import FaultServer, TurnAt

from pipeline import records
from pipeline.config import TeacherSection
from pipeline.context import RunContext
from pipeline.errors import StoreWriteError, TeacherUnavailable, exit_code_for
from pipeline.stages.orca import OrcaConfig, run_orca
from pipeline.store import Dataset, DatasetWriter
from pipeline.teacher.base import ChatRequest, Sampling, TeacherError
from pipeline.teacher.breaker import Breaker, BreakerTeacher
from pipeline.teacher.cache import ResponseCache
from pipeline.teacher.factory import TeacherFactory
from pipeline.teacher.fake import FakeTeacher
from pipeline.teacher.openai_backend import OpenAIBackend

HERE = Path(__file__).resolve().parent
N = 30           # 6 shards of 5 rows
CONCURRENCY = 4  # requests in flight: the most a rerun may ask again


def make_input(path: Path, n: int = N) -> Path:
    w = DatasetWriter(path, "seed")
    w.write_shard(0, [records.new_row(f"task number {i}", origin="seed") for i in range(n)])
    w.write_manifest()
    return path


def write_config(path: Path, base_url: str, **teacher) -> Path:
    t = {"backend": "openai", "base_url": base_url, "model": "fault-model", "concurrency": CONCURRENCY,
         "max_retries": 1, "timeout_s": 1.0, "ping_timeout_s": 2.0, "breaker_consecutive": 8,
         "cache_path": str(path.parent / "cache.sqlite"), **teacher}
    lines = ["[run]", "shard_rows = 5", "[teacher]"]
    lines += [f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"' for k, v in t.items()]
    path.write_text("\n".join(lines).replace("True", "true").replace("False", "false") + "\n")
    return path


def distill(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    env.pop("OPENAI_API_KEY", None)
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=HERE.parent)


def orca(tmp_path: Path, conf: Path) -> subprocess.CompletedProcess:
    return distill("orca", str(tmp_path / "in"), "--config", str(conf), "--workdir", str(tmp_path / "w"),
                   "--run-id", "r", "--out", str(tmp_path / "out"), "--no-progress")


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]


def task_answers(srv: FaultServer) -> dict[str, int]:
    return {c: n for c, n in srv.answered.items() if c.startswith("task number")}


@pytest.mark.parametrize("action", ["401", "blackhole"])
def test_teacher_turning_bad_mid_run_stops_with_exit_4_and_the_rerun_finishes(tmp_path, action):
    make_input(tmp_path / "in")
    plan = TurnAt(after=12, action=action)
    with FaultServer(plan) as srv:
        conf = write_config(tmp_path / "distill.toml", srv.base_url)
        bad = orca(tmp_path, conf)
        assert bad.returncode == 4, bad.stderr
        assert "Traceback" not in bad.stderr and len(error_lines(bad)) == 1, bad.stderr
        why = "HTTP 401" if action == "401" else "timeout"
        assert "teacher failed" in error_lines(bad)[0] and why in error_lines(bad)[0], bad.stderr
        if action == "401":
            assert "$OPENAI_API_KEY" in error_lines(bad)[0]
        out = tmp_path / "out"
        assert not (out / "_manifest.json").exists()
        done = sorted((out / "_done").glob("*.json")) if (out / "_done").exists() else []
        assert len(done) < N // 5                          # it really stopped part way
        kept = [r for p in sorted(out.glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]
        assert len(kept) == 5 * len(done)                  # a done shard holds all its rows, answered
        assert not list(out.glob("rejected/*.parquet"))    # no teacher_error drops, no drops at all
        answered_before = task_answers(srv)
        assert 0 < sum(answered_before.values()) <= 12 + CONCURRENCY

        plan.fix()
        srv.release()
        good = orca(tmp_path, conf)
        assert good.returncode == 0, good.stderr
    m = Dataset(tmp_path / "out", require_complete=True).manifest()
    assert m["rows_out"] == N and m["rows_rejected"] == 0 and m["drops"] == {}
    answers = task_answers(srv)
    assert len(answers) == N                               # every row answered once at least
    repeated = sum(n - 1 for n in answers.values())
    assert repeated <= CONCURRENCY, answers                # answers that came back were in the cache


def test_a_wrong_key_from_the_start_is_exit_4_from_the_ping(tmp_path):
    make_input(tmp_path / "in")
    with FaultServer(lambda content, attempt: "401") as srv:
        proc = orca(tmp_path, write_config(tmp_path / "distill.toml", srv.base_url))
    assert proc.returncode == 4 and len(error_lines(proc)) == 1, proc.stderr
    assert "did not answer the ping: auth: HTTP 401" in error_lines(proc)[0]
    assert dict(srv.received) == {"Reply with the word: ready": 1}  # no row was sent, nothing retried
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.parquet"))


def test_the_ping_comes_after_the_input_checks_and_before_overwrite_moves_anything(tmp_path):
    make_input(tmp_path / "in")
    (tmp_path / "in" / "_manifest.json").unlink()  # an unfinished input: refused before the teacher is asked
    with FaultServer(lambda content, attempt: "401") as srv:
        conf = write_config(tmp_path / "distill.toml", srv.base_url)
        proc = orca(tmp_path, conf)
        assert proc.returncode == 3 and "unfinished" in error_lines(proc)[0], proc.stderr
        assert not srv.received
        make_input(tmp_path / "in")
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "notes.txt").write_text("mine")
        proc = distill("orca", str(tmp_path / "in"), "--config", str(conf), "--workdir", str(tmp_path / "w"),
                       "--run-id", "r", "--out", str(tmp_path / "out"), "--no-progress", "--overwrite")
    assert proc.returncode == 4 and "did not answer the ping" in error_lines(proc)[0], proc.stderr
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"  # a dead teacher moved nothing aside


def test_a_black_hole_from_the_start_is_exit_4_from_the_ping(tmp_path):
    make_input(tmp_path / "in")
    with FaultServer(lambda content, attempt: "blackhole") as srv:
        proc = orca(tmp_path, write_config(tmp_path / "distill.toml", srv.base_url, timeout_s=60.0))
    assert proc.returncode == 4 and len(error_lines(proc)) == 1, proc.stderr
    assert "did not answer the ping: timeout: no answer within 2s" in error_lines(proc)[0]  # ping_timeout_s
    assert dict(srv.received) == {"Reply with the word: ready": 2}                      # one retry


def test_distill_run_pings_once_before_its_first_stage(tmp_path):
    with FaultServer(lambda content, attempt: "401") as srv:
        proc = distill("run", "--config", str(write_config(tmp_path / "distill.toml", srv.base_url)),
                       "--workdir", str(tmp_path / "w"), "--run-id", "r", "--no-progress", "--no-report")
    assert proc.returncode == 4 and len(error_lines(proc)) == 1, proc.stderr
    assert "did not answer the ping: auth: HTTP 401" in error_lines(proc)[0]
    assert dict(srv.received) == {"Reply with the word: ready": 1}
    assert not list((tmp_path / "w").rglob("_done"))     # no stage started


def test_a_server_that_is_not_openai_compatible_is_exit_4_from_the_ping(tmp_path):
    make_input(tmp_path / "in")
    with FaultServer(lambda content, attempt: "404") as srv:
        proc = orca(tmp_path, write_config(tmp_path / "distill.toml", srv.base_url))
    assert proc.returncode == 4 and len(error_lines(proc)) == 1, proc.stderr
    assert "invalid_response: HTTP 404" in error_lines(proc)[0] and "OpenAI-compatible" in error_lines(proc)[0]


def test_teacher_ping_on_5xx_exits_4_with_one_line(tmp_path):
    with FaultServer(lambda content, attempt: "500") as srv:
        proc = distill("teacher", "ping", "--backend", "openai", "--base-url", srv.base_url, "--model", "fault-model")
    assert proc.returncode == 4 and proc.stdout == "", proc.stderr
    assert error_lines(proc) == proc.stderr.splitlines() and len(error_lines(proc)) == 1
    assert "did not answer the ping: server_error: HTTP 500" in error_lines(proc)[0]
    assert srv.received["Say hello in one short sentence."] == 2  # the ping's one retry, not the run's six


@pytest.mark.parametrize("status, says", [(401, "check the key in $OPENAI_API_KEY"), (404, "OpenAI-compatible")])
def test_model_discovery_names_a_wrong_key_or_a_wrong_server(status, says):
    with FaultServer(models_status=status) as srv:
        proc = distill("teacher", "ping", "--backend", "openai", "--base-url", srv.base_url)
    assert proc.returncode == 4 and len(error_lines(proc)) == 1, proc.stderr
    assert f"/models answered HTTP {status}" in error_lines(proc)[0] and says in error_lines(proc)[0]


# -- the circuit breaker ------------------------------------------------------------------------------

def req(text: str) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], sampling=Sampling(max_tokens=8),
                       record_id=text, purpose="t")


def test_breaker_trips_on_consecutive_outside_failures_and_sends_nothing_after():
    fake = FakeTeacher(lambda r: TeacherError("auth", "HTTP 401: no (check the key in $OPENAI_API_KEY)", 1, False)
                       if r.record_id != "0" else "fine")
    t = BreakerTeacher(fake, Breaker(consecutive=3, rate=1.0, window=10))
    with pytest.raises(TeacherUnavailable, match=r"teacher failed 3 of the last 3 requests: auth: HTTP 401.*"
                                                 r"\$OPENAI_API_KEY"):
        t.chat([req(str(i)) for i in range(10)])
    assert len(fake.seen) == 4                     # one answer, then three failures: the fourth trips it
    with pytest.raises(TeacherUnavailable):        # a tripped breaker stays tripped
        t.chat([req("more")])
    assert len(fake.seen) == 4


def test_breaker_ignores_row_caused_failures():
    b = Breaker(consecutive=2, rate=0.5, window=4)
    for _ in range(10):
        assert b.record(TeacherError("bad_request", "HTTP 400")) is None
        assert b.record(TeacherError("too_long", "over the window")) is None
    assert b.tripped is None


def test_breaker_trips_on_a_failure_rate_over_its_window():
    b = Breaker(consecutive=3, rate=0.5, window=6)
    timeout = TeacherError("timeout", "no answer within 1s")
    pattern = [timeout, timeout, None]           # never 3 in a row; two thirds of every window
    seen = []
    for i in range(12):
        seen.append(b.record(pattern[i % 3]))
        if seen[-1] is not None:
            break
    assert seen[:5] == [None] * 5                 # not before the window is full
    assert b.tripped == seen[-1] and "teacher failed 4 of the last 6 requests: timeout" in b.tripped
    assert Breaker(consecutive=0, rate=0.7, window=6).record(timeout) is None


def test_a_tripped_breaker_abandons_the_requests_in_flight_over_real_http():
    with FaultServer(lambda content, attempt: "401") as srv:
        sec = TeacherSection(backend="openai", base_url=srv.base_url, model="fault-model", concurrency=4,
                             max_retries=3, breaker_consecutive=5, cache=False)
        t = TeacherFactory(sec, Path("."), 0).build()
        try:
            with pytest.raises(TeacherUnavailable, match="teacher failed 5 of the last 5 requests: auth"):
                t.chat([req(f"q{i}") for i in range(200)])
        finally:
            t.close()
    assert sum(srv.received.values()) <= 5 + 4    # the trip, plus at most what was in flight


def test_teacher_unavailable_keeps_its_type_and_exit_code_through_a_worker_process():
    from pipeline.executors.local import Pool
    with Pool(2) as pool:
        with pytest.raises(TeacherUnavailable, match="from a worker") as e:
            list(pool.imap(raise_unavailable, [{"raise": True}, {"raise": False}]))
    assert exit_code_for(e.value) == 4
    again = pickle.loads(pickle.dumps(StoreWriteError("cache full")))
    assert type(again) is StoreWriteError and exit_code_for(again) == 5


def raise_unavailable(task: dict) -> dict:
    if task["raise"]:
        raise TeacherUnavailable("teacher failed 50 of the last 50 requests: from a worker")
    return task


# -- length guard, cache --------------------------------------------------------------------------------

def test_a_request_over_the_context_window_is_a_too_long_drop_and_never_sent(tmp_path):
    src = tmp_path / "in"
    w = DatasetWriter(src, "seed")
    huge = "word " * 5000
    w.write_shard(0, [records.new_row("short question", origin="seed"), records.new_row(huge, origin="seed")])
    w.write_manifest()
    with FaultServer() as srv:
        sec = TeacherSection(backend="openai", base_url=srv.base_url, model="fault-model", context_tokens=2048,
                             cache_path=str(tmp_path / "cache.sqlite"))
        ctx = RunContext(run_id="r", workdir=tmp_path, progress=False,
                         teacher_factory=TeacherFactory(sec, tmp_path, 0))  # its window also fits the budgets
        try:
            m = run_orca(src, tmp_path / "out", ctx, OrcaConfig())
        finally:
            ctx.close()
    assert m["rows_out"] == 1 and m["drops"] == {"too_long": 1}
    (rej,) = Dataset(tmp_path / "out").rejected().read().to_pylist()
    assert rej["drop_reason"] == "too_long" and "context of 2048 tokens" in rej["drop_detail"]
    assert list(srv.received) == ["short question"]


def test_the_cache_key_names_the_endpoint(tmp_path):
    cache = str(tmp_path / "cache.sqlite")
    with FaultServer() as a, FaultServer() as b:
        for srv in (a, b, a):
            sec = TeacherSection(backend="openai", base_url=srv.base_url, model="fault-model", cache_path=cache)
            t = TeacherFactory(sec, tmp_path, 0).build()
            try:
                [c] = t.chat([req("same question")])
            finally:
                t.close()
            assert c.ok
    assert a.received["same question"] == 1 and b.received["same question"] == 1  # b was asked; a's rerun was not
    assert c.cached


def test_each_answer_is_committed_before_it_is_used(tmp_path):
    path = tmp_path / "cache.sqlite"
    seen = []
    with FaultServer() as srv:
        sec = TeacherSection(backend="openai", base_url=srv.base_url, model="fault-model", cache_path=str(path),
                             concurrency=1)
        t = TeacherFactory(sec, tmp_path, 0).build()
        try:
            # another connection (another process after a kill) sees every answer the stage was handed
            t.chat([req(f"q{i}") for i in range(5)],
                   on_done=lambda i, c: seen.append(ResponseCache(path).counts()["ok"]))
        finally:
            t.close()
    assert seen == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("make", ["directory", "not a database"])
def test_a_cache_that_cannot_be_opened_is_one_line_exit_5(tmp_path, make):
    path = tmp_path / "cache.sqlite"
    if make == "directory":
        path.mkdir()
    else:
        path.write_bytes(b"this is not sqlite " * 100)
    with pytest.raises(StoreWriteError, match="response cache .*cache.sqlite cannot be opened") as e:
        ResponseCache(path)
    assert exit_code_for(e.value) == 5 and "\n" not in str(e.value)


@pytest.mark.parametrize("action, kind", [("404", "invalid_response"), ("401", "auth")])
def test_openai_backend_maps_auth_and_missing_routes_to_outside_kinds(action, kind):
    with FaultServer(lambda content, attempt: action) as srv:
        t = OpenAIBackend(TeacherSection(backend="openai", base_url=srv.base_url, model="fault-model", max_retries=2))
        try:
            [c] = t.chat([req("hello")])
        finally:
            t.close()
    assert c.error.kind == kind and c.error.outside and c.attempts == 1 and f"HTTP {action}" in c.error.message
