"""Overlapping shards (runner lookahead): the next shard's requests start while an earlier shard waits,
shards still commit in order, and every invariant of the one-at-a-time loop holds.

The teacher is the real openai backend (with the factory's layers) over loopback against
tests/faultserver.py; "hold" keeps a request unanswered until `release()`, which is how a test
makes one shard slow without timing anything.
"""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest
from faultserver import FaultServer
from proc_support import sigkill

from pipeline import records
from pipeline.config import TeacherSection
from pipeline.context import RunContext
from pipeline.errors import TeacherUnavailable, exit_code_for
from pipeline.runner import ShardResult, run_shards
from pipeline.stages.orca import OrcaConfig, run_orca
from pipeline.stages.orca.stage import user_turn
from pipeline.store import Dataset, DatasetWriter
from pipeline.teacher.base import ChatRequest, Sampling
from pipeline.teacher.budget import Budget, BudgetedTeacher
from pipeline.teacher.factory import TeacherFactory
from pipeline.teacher.openai_backend import OpenAIBackend

ROWS, SHARD = 12, 3  # four shards
SLOW = "task number 0"  # the first row of shard 0


def make_input(path, n=ROWS):
    w = DatasetWriter(path, "seed")
    rows = [records.new_row(f"task number {i}", origin="seed") for i in range(n)]
    w.write_shard(0, rows)
    w.write_manifest()
    return rows


def section(url, **kw):
    return TeacherSection(backend="openai", base_url=url, model="fault-model", cache=False,
                          **{"concurrency": 8, "max_retries": 1, "timeout_s": 30, **kw})


def recipe(tmp_path):
    """A configured teacher the teacher-free stages below never build (shards overlap for such a run)."""
    return TeacherFactory(section("http://127.0.0.1:9/v1"), tmp_path, 0)


def wait_for(cond, what, limit=30.0):
    """Poll until `cond()` (a deadlock guard, not a timing assert)."""
    end = time.monotonic() + limit
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.01)


def marker(out, k):
    path = out / "_done" / f"part-{k:05d}.json"
    return json.loads(path.read_text()) if path.exists() else None


def commits(monkeypatch):
    """The shard indexes in the order the runner commits them."""
    seen: list[int] = []
    real = DatasetWriter.commit

    def commit(self, staged, stats):
        seen.append(staged.index)
        return real(self, staged, stats)
    monkeypatch.setattr(DatasetWriter, "commit", commit)
    return seen


class Gate:
    """A teacher-free stage whose shard 0 finishes only after shard 1 has finished."""

    name = "gate"

    def __init__(self):
        self.finished: list[int] = []
        self.one_done = threading.Event()

    def settings(self):
        return {}

    def process(self, rows, ctx):
        first = int(rows[0]["instruction"].split()[-1])
        if first == 0:
            self.one_done.wait(10)  # deadlock guard: one at a time, shard 1 never starts before this returns
        self.finished.append(first // SHARD)
        if first == SHARD:
            self.one_done.set()
        return ShardResult(kept=[dict(r) for r in rows])


def test_shards_commit_in_order_when_a_later_shard_finishes_first(tmp_path, monkeypatch):
    make_input(tmp_path / "in")
    order = commits(monkeypatch)
    stage = Gate()
    ctx = RunContext(run_id="r", progress=False, teacher_factory=recipe(tmp_path))
    m = run_shards(stage, Dataset(tmp_path / "in"), tmp_path / "out", ctx, shard_rows=SHARD, lookahead=3)
    assert stage.finished.index(1) < stage.finished.index(0)      # shard 1 was done before shard 0
    assert order == [0, 1, 2, 3] and m["rows_out"] == ROWS
    assert [r["instruction"] for r in Dataset(tmp_path / "out").iter_rows()] == [f"task number {i}" for i in range(ROWS)]


def hold_first_attempt(content, attempt):
    return "hold" if content == SLOW and attempt == 1 else "ok"


def run_in_thread(fn):
    box: dict = {}

    def go():
        try:
            box["value"] = fn()
        except BaseException as e:  # looked at by the test
            box["error"] = e
    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t, box


def test_a_slow_shard_does_not_hold_back_the_next_and_each_shard_counts_its_own_usage(tmp_path, monkeypatch):
    rows = make_input(tmp_path / "in")
    order = commits(monkeypatch)
    with FaultServer(hold_first_attempt) as srv:
        factory = TeacherFactory(section(srv.base_url), tmp_path, 0)
        ctx = RunContext(run_id="r", teacher_factory=factory, progress=False)
        t, box = run_in_thread(lambda: run_orca(tmp_path / "in", tmp_path / "out", ctx, OrcaConfig(),
                                                shard_rows=SHARD))
        try:
            # shard 0's first request is held; every other row of every shard still reaches the teacher
            wait_for(lambda: srv.holding.is_set() and sum(srv.received.values()) == ROWS, "all rows asked")
            assert order == []                                   # nothing commits ahead of shard 0
            srv.release()                                        # the held request fails and is asked again
            t.join(60)
            assert "error" not in box, box.get("error")
            m = box["value"]
            total = ctx.teacher.stats
        finally:
            ctx.close()
    assert order == [0, 1, 2, 3] and m["rows_out"] == ROWS
    markers = [marker(tmp_path / "out", k) for k in range(4)]
    for k, mk in enumerate(markers):
        mine = rows[k * SHARD:(k + 1) * SHARD]
        answers = ["echo:" + user_turn(r) for r in mine]
        assert mk["teacher_requests"] == SHARD
        assert mk["teacher_sent"] == SHARD + (k == 0) and mk["teacher_retries"] == (k == 0)
        assert mk["teacher_prompt_tokens"] == 7 * SHARD                      # faultserver: 7 per answer
        assert mk["teacher_completion_tokens"] == sum(len(a.split()) for a in answers)
    for name in ("requests", "sent", "retries", "prompt_tokens", "completion_tokens"):
        assert sum(mk[f"teacher_{name}"] for mk in markers) == getattr(total, name)


def test_an_unanswered_shard_with_overlap_is_exit_4_and_the_others_commit(tmp_path, monkeypatch):
    make_input(tmp_path / "in")
    order = commits(monkeypatch)
    with FaultServer(hold_first_attempt) as srv:
        sec = section(srv.base_url, max_retries=0)  # the held request's failure is final: row 0 unanswered
        ctx = RunContext(run_id="r", teacher_factory=TeacherFactory(sec, tmp_path, 0), progress=False)
        t, box = run_in_thread(lambda: run_orca(tmp_path / "in", tmp_path / "out", ctx, OrcaConfig(),
                                                shard_rows=SHARD))
        try:
            wait_for(lambda: srv.holding.is_set() and sum(srv.received.values()) == ROWS, "all rows asked")
            srv.release()
            t.join(60)
        finally:
            ctx.close()
    err = box.get("error")
    assert isinstance(err, TeacherUnavailable) and exit_code_for(err) == 4
    assert "1 rows in 1 shard(s) unanswered (connection: 1)" in str(err)
    assert order == [1, 2, 3]
    assert marker(tmp_path / "out", 0) is None and all(marker(tmp_path / "out", k) for k in (1, 2, 3))
    assert not Dataset(tmp_path / "out").complete


class Crashing:
    """A teacher-free stage that raises on one shard (a bug, a full disk), the first time only."""

    name = "crashing"

    def __init__(self, crash_on=None):
        self.crash_on = crash_on
        self.processed: list[int] = []

    def settings(self):
        return {}

    def process(self, rows, ctx):
        k = int(rows[0]["instruction"].split()[-1]) // SHARD
        self.processed.append(k)
        if k == self.crash_on:
            raise RuntimeError("simulated crash")
        return ShardResult(kept=[dict(r, output=f"done {k}") for r in rows])


def test_resume_after_an_exception_mid_run_redoes_only_the_failed_shard(tmp_path, monkeypatch):
    make_input(tmp_path / "in")
    ds_in = Dataset(tmp_path / "in")
    ctx = RunContext(run_id="r", progress=False, teacher_factory=recipe(tmp_path))
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_shards(Crashing(crash_on=1), ds_in, tmp_path / "out", ctx, shard_rows=SHARD, lookahead=8)
    assert marker(tmp_path / "out", 1) is None            # the others were delivered, in order
    assert all(marker(tmp_path / "out", k) for k in (0, 2, 3))
    again = Crashing()
    run_shards(again, ds_in, tmp_path / "out", ctx, shard_rows=SHARD, lookahead=8)
    assert again.processed == [1]
    run_shards(Crashing(), ds_in, tmp_path / "ref", ctx, shard_rows=SHARD, lookahead=0)
    rows = lambda p: [(r["id"], r["output"]) for r in Dataset(p, require_complete=True).iter_rows()]  # noqa: E731
    assert rows(tmp_path / "out") == rows(tmp_path / "ref")


def test_a_stage_budget_cap_runs_its_shards_one_at_a_time(tmp_path):
    make_input(tmp_path / "in")
    stage = Gate()
    budget = Budget().child(max_rows=100)
    ctx = RunContext(run_id="r", progress=False, teacher_factory=recipe(tmp_path))
    run_shards(stage, Dataset(tmp_path / "in"), tmp_path / "out", ctx, shard_rows=SHARD, lookahead=3,
               budget=budget, spend=lambda b, marker: b.spend(rows=marker["rows_out"]))
    assert stage.finished == [0, 1, 2, 3] and budget.rows == ROWS  # shard 0 waited out its guard alone


def test_concurrent_chat_calls_share_the_concurrency(tmp_path):
    """Two threads' calls on one backend: together never more than `concurrency` requests in flight."""
    with FaultServer(lambda content, attempt: "hold") as srv:
        backend = OpenAIBackend(section(srv.base_url, concurrency=3, max_retries=0), seed=0)
        reqs = lambda tag: [ChatRequest(messages=[{"role": "user", "content": f"{tag} {i}"}]) for i in range(4)]  # noqa: E731
        try:
            calls = [run_in_thread(lambda tag=tag: backend.chat(reqs(tag))) for tag in ("a", "b")]
            wait_for(lambda: sum(srv.received.values()) >= 3, "three requests in flight")
            time.sleep(0.3)  # room for a fourth to arrive if the slots were not shared
            assert sum(srv.received.values()) == 3
            while any(t.is_alive() for t, _ in calls):
                srv.release()
                time.sleep(0.05)
            assert sum(srv.received.values()) == 8 and all("error" not in box for _, box in calls)
        finally:
            backend.close()


def test_budgeted_teacher_keeps_its_window_full_behind_a_slow_answer(tmp_path):
    """Waves of `wave` would wait for the held answer; the window sends the next request as each
    one returns, and the limit is checked before each send."""
    with FaultServer(hold_first_attempt) as srv:
        sec = section(srv.base_url, concurrency=4, max_retries=0)
        budget = Budget(max_tokens=10 ** 6)
        teacher = BudgetedTeacher(TeacherFactory(sec, tmp_path, 0).build(), budget, wave=4)
        reqs = [ChatRequest(messages=[{"role": "user", "content": f"task number {i}"}], sampling=Sampling(max_tokens=8))
                for i in range(12)]
        try:
            t, box = run_in_thread(lambda: teacher.chat(reqs))
            wait_for(lambda: srv.holding.is_set() and sum(srv.answered.values()) == 11, "the other 11 answered")
            srv.release()
            t.join(30)
            out = box["value"]
        finally:
            teacher.close()
    assert [c.ok for c in out] == [False] + [True] * 11 and out[0].error.kind == "connection"
    assert budget.requests == 12 and budget.tokens == sum(c.usage.prompt_tokens + c.usage.completion_tokens for c in out)


def test_budgeted_teacher_window_overshoots_by_at_most_what_is_in_flight(tmp_path):
    with FaultServer() as srv:
        sec = section(srv.base_url, concurrency=4)
        per = 7 + 3                                       # faultserver: 7 prompt tokens, "echo:task number i"
        budget = Budget(max_tokens=5 * per)
        teacher = BudgetedTeacher(TeacherFactory(sec, tmp_path, 0).build(), budget, wave=4)
        reqs = [ChatRequest(messages=[{"role": "user", "content": f"task number {i}"}]) for i in range(40)]
        try:
            out = teacher.chat(reqs)
        finally:
            teacher.close()
    sent = sum(srv.received.values())
    assert 5 <= sent <= 5 + 4 and sum(c.ok for c in out) == sent
    assert all(c.error.kind == "budget_exhausted" for c in out if not c.ok) and budget.refused == 40 - sent


def test_sigkill_with_overlapping_shards_repeats_only_the_request_in_flight(tmp_path):
    """Shard 2 waits on a held answer while shards 3 and 4 are answered; SIGKILL then. Nothing after
    shard 1 was committed (in order), nothing was staged for the waiting shards, and the rerun asks
    the teacher only for what was never answered: the held request and the rows after it."""
    from test_teacher_kill import N, run_stage

    src, out, wd = tmp_path / "in", tmp_path / "out", tmp_path / "work"
    w = DatasetWriter(src, "seed")
    rows = [records.new_row(f"task {i}", origin="seed") for i in range(N)]   # 5 shards of 5 (the last 3)
    w.write_shard(0, rows)
    w.write_manifest()
    hold = "task 12"  # the third row of shard 2
    plan = lambda content, attempt: "hold" if content == hold and attempt == 1 else "ok"  # noqa: E731
    with FaultServer(plan, delay=0.01) as srv:
        args = [str(src), str(out), str(wd), srv.base_url, "4"]
        proc = run_stage(args, lookahead="8")
        try:
            wait_for(lambda: proc.poll() is not None or (srv.holding.is_set() and len(srv.answered) == 12 + 8
                                                          and (out / "_done" / "part-00001.json").exists()),
                     "shards 0-1 committed, rows 10-11 and shards 3-4 answered", 120)
        finally:
            sigkill(proc)
        assert proc.returncode == -signal.SIGKILL
        srv.release()
        names = [p.name for p in out.rglob("*")]
        assert not [n for n in names if ".tmp-" in n], names
        assert sorted(p.stem for p in (out / "_done").glob("part-*.json")) == ["part-00000", "part-00001"]
        assert not (out / "_manifest.json").exists()

        rerun = run_stage(args, lookahead="8")
        log = rerun.communicate(timeout=120)[0]
        assert rerun.returncode == 0, log.decode(errors="replace")
    ds = Dataset(out, require_complete=True)
    got = ds.read(columns=["id", "instruction", "output"]).to_pylist()
    assert sorted(r["id"] for r in got) == sorted(r["id"] for r in rows)
    assert all(r["output"] == "echo:" + r["instruction"] for r in got)
    assert all(v == 1 for v in srv.answered.values()) and len(srv.answered) == N
    assert sum(srv.received.values()) == N + 1 and srv.received[hold] == 2
    assert ds.manifest()["totals"]["teacher_cache_hits"] == 2 + 8  # rows 10-11, shards 3 and 4


def test_a_teacher_without_concurrent_calls_gets_its_shards_one_at_a_time(tmp_path):
    """A scripted teacher answers in the caller's thread: overlapping would only reorder its calls."""
    from pipeline.teacher.fake import FakeTeacher

    make_input(tmp_path / "in")
    threads = set()
    teacher = FakeTeacher(lambda req: threads.add(threading.current_thread().name) or "answer")
    ctx = RunContext(run_id="r", progress=False, teacher_factory=lambda: teacher)
    run_orca(tmp_path / "in", tmp_path / "out", ctx, OrcaConfig(), shard_rows=SHARD)
    assert threads == {threading.current_thread().name}            # no shard thread asked it
    assert [r.messages[-1]["content"] for r in teacher.seen] == [f"task number {i}" for i in range(ROWS)]
