"""Batch teacher backends against the loopback stand-in (tests/batchserver.py, real HTTP), through the factory's layers.

Each test counts at the stand-in: batches created, lines processed
successfully per custom id (above 1: a request paid twice), and checks that
every request got exactly its own answer (none lost, none duplicated).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from batchserver import BatchServer

from pipeline.config import TeacherSection
from pipeline.errors import BatchesInFlight, exit_code_for
from pipeline.teacher import TeacherFactory
from pipeline.teacher.base import ChatRequest
from pipeline.teacher.batch_backend import BatchTeacher
from pipeline.teacher.batch_journal import BatchJournal
from pipeline.teacher.batch_providers import make_provider
from pipeline.teacher.factory import batch_dir

PROVIDERS = ["openai_batch", "anthropic_batch"]
ROOT = Path(__file__).resolve().parent.parent


def reqs(n: int, tag: str = "q") -> list[ChatRequest]:
    return [ChatRequest(messages=[{"role": "user", "content": f"{tag}{i}"}], record_id=f"{tag}{i}") for i in range(n)]


def section(backend: str, srv: BatchServer | None, **kw) -> TeacherSection:
    return TeacherSection(backend=backend, base_url=srv.base_url if srv else None, model="m", batch_poll_s=0.01,
                          **kw)


def teacher(sec: TeacherSection, wd: Path, **kw):
    folder = batch_dir(sec, wd)
    backend = BatchTeacher(sec, make_provider(sec, folder), folder, **kw)
    return TeacherFactory(sec, wd, 0).build(backend), backend


def check_answers(requests, out) -> None:
    assert [c.text for c in out] == [f"echo:{r.messages[-1]['content']}" for r in requests]


@pytest.fixture
def server(tmp_path):
    with BatchServer(tmp_path / "server-state.json") as srv:
        yield srv


@pytest.mark.parametrize("backend", PROVIDERS)
def test_requests_are_split_within_the_limit_and_each_custom_id_is_the_cache_key(tmp_path, server, backend):
    t, b = teacher(section(backend, server, batch_max_requests=4), tmp_path)
    rs = reqs(10)
    out = t.chat(rs)
    check_answers(rs, out)
    sizes = [len(server.state.batches[i]["_lines"]) for i in server.state.order]
    assert sizes == [4, 4, 2]
    sent = {ln["custom_id"] for i in server.state.order for ln in server.state.batches[i]["_lines"]}
    assert sent == set(t.keys(rs))  # the cache layer's keys (the endpoint, seed and sampling included)
    t.close()


def test_a_byte_limit_cuts_batches_by_size(tmp_path, server):
    t, _ = teacher(section("openai_batch", server, batch_max_bytes=700), tmp_path)
    rs = reqs(6)
    check_answers(rs, t.chat(rs))
    files = [server.state.files[server.state.batches[i]["input_file_id"]] for i in server.state.order]
    assert len(files) > 1 and all(len(f.encode()) <= 700 for f in files)
    t.close()


@pytest.mark.parametrize("backend", PROVIDERS)
def test_expiry_failed_lines_and_shuffled_results_lose_nothing_and_pay_nothing_twice(tmp_path, server, backend):
    server.set(expire_first=1, expire_after=3, fail_every=4, shuffle=True, step=2)
    t, b = teacher(section(backend, server, batch_max_requests=6), tmp_path)
    rs = reqs(14)
    rs.append(rs[5])  # the same request twice in one call: sent once
    out = t.chat(rs)
    check_answers(rs, out)
    assert server.paid_twice() == {}
    assert len(server.billed) == 14
    assert server.state.lines_in == 14 + b.stats.retries  # nothing sent again but the retried lines
    assert b.stats.faults.get("batch_retried_expired", 0) == 3  # 6 lines, 3 processed before it expired
    assert b.stats.faults.get("batch_retried_errored_server_error", 0) >= 3
    marker = b.stats.delta(None).marker()
    assert marker["teacher_batch_retried_expired"] == 3  # carried into shard markers and the manifest
    t.close()


@pytest.mark.parametrize("backend", PROVIDERS)
def test_past_the_retry_limit_an_expired_line_is_unanswered_not_dropped(tmp_path, server, backend):
    server.set(expire_first=5, expire_after=1)
    t, b = teacher(section(backend, server, batch_retries=1), tmp_path)
    out = t.chat(reqs(3))
    # 1st batch: one answered before it expired; the retry batch: one more; the third expired twice
    assert sorted(c.ok for c in out) == [False, True, True]
    [lost] = [c for c in out if not c.ok]
    assert lost.unanswered and lost.error.kind == "timeout"
    assert b.stats.faults["batch_failed_expired"] == 1
    t.close()


@pytest.mark.parametrize("backend", PROVIDERS)
def test_the_stand_in_restarted_between_polls_keeps_its_batches(tmp_path, backend):
    state = tmp_path / "state.json"
    holder = {"srv": BatchServer(state).start()}
    holder["srv"].set(step=2)
    port = holder["srv"].port
    restarts = []

    def restart(_seconds: float) -> None:
        holder["srv"].stop()
        holder["srv"] = BatchServer(state, port=port).start()
        restarts.append(1)

    sec = section(backend, holder["srv"])
    t, _ = teacher(sec, tmp_path, sleep=restart)
    try:
        rs = reqs(7)
        check_answers(rs, t.chat(rs))
        srv = holder["srv"]
        assert len(restarts) >= 3 and srv.creations == 1 and srv.paid_twice() == {}
    finally:
        t.close()
        holder["srv"].stop()


@pytest.mark.parametrize("backend", PROVIDERS)
def test_a_lost_create_answer_is_found_at_the_provider_not_submitted_again(tmp_path, server, backend):
    server.set(drop_creates=1)
    t, _ = teacher(section(backend, server, max_retries=0), tmp_path)
    rs = reqs(5)
    check_answers(rs, t.chat(rs))
    assert server.state.create_calls == 1 and server.creations == 1 and server.paid_twice() == {}
    [rec] = BatchJournal(tmp_path / "teacher_batches").records()
    assert rec["state"] == "collected" and rec["batch_id"] == server.state.order[0]
    t.close()


@pytest.mark.parametrize("backend", PROVIDERS)
def test_a_dangling_intent_of_a_killed_process_is_adopted_on_resume(tmp_path, server, backend):
    """A kill between the create call and journaling its id: the journal holds only the intent."""
    sec = section(backend, server)
    t, b = teacher(sec, tmp_path)
    server.set(hold=True)
    rs = reqs(4)
    b.wait_s = 0
    with pytest.raises(BatchesInFlight):
        t.chat(rs)
    t.close()
    journal = BatchJournal(tmp_path / "teacher_batches")
    [rec] = journal.records()
    journal.update(rec["key"], state="intent", batch_id=None, pid=2 ** 22 + 12345)  # a dead process's intent
    server.set(hold=False)
    t2, _ = teacher(sec, tmp_path)
    check_answers(rs, t2.chat(rs))
    assert server.creations == 1 and server.paid_twice() == {}
    assert journal.records()[0]["batch_id"] == rec["batch_id"]
    t2.close()


def test_batch_wait_stops_with_exit_9_and_the_rerun_polls_instead_of_submitting(tmp_path, server):
    server.set(hold=True)
    sec = section("openai_batch", server, batch_wait_s=0)
    t, _ = teacher(sec, tmp_path)
    rs = reqs(5)
    with pytest.raises(BatchesInFlight) as e:
        t.chat(rs)
    assert exit_code_for(e.value) == 9 and "rerun" in str(e.value)
    t.close()
    server.set(hold=False)
    t2, _ = teacher(sec.model_copy(update={"batch_wait_s": None}), tmp_path)
    check_answers(rs, t2.chat(rs))
    assert server.creations == 1 and server.paid_twice() == {}
    t2.close()


def test_reserve_is_called_before_create_and_may_refuse_the_batch(tmp_path, server):
    seen = []

    class Refused(Exception):
        pass

    def reserve(batch):
        seen.append(len(batch))
        raise Refused("over the cap")

    t, _ = teacher(section("openai_batch", server, batch_max_requests=3), tmp_path, reserve=reserve)
    with pytest.raises(Refused):
        t.chat(reqs(5))
    assert seen == [3] and server.creations == 0 and server.state.files == {}
    assert BatchJournal(tmp_path / "teacher_batches").records() == []
    t.close()


def test_a_cost_cap_reserves_each_batch_through_the_factory_and_refuses_one_that_does_not_fit(tmp_path, server):
    from pipeline.errors import BudgetExhausted
    from pipeline.teacher.budget import Budget
    from pipeline.teacher.pricing import Prices

    sec = section("openai_batch", server, batch_max_requests=3, cache=False, price_prompt_per_mtok=1000.0,
                  price_completion_per_mtok=1000.0)
    prices = Prices.of(sec)
    rs = reqs(3)
    budget = Budget().cap_cost(1e9, prices, resumable=True, batch=True)
    worst = budget.worst_case_cost(rs)
    # room for one batch of 3 at its worst case, and not for a second next to what the first spent
    budget = Budget().cap_cost(worst * 1.000001, prices, resumable=True, batch=True)
    factory = TeacherFactory(sec, tmp_path, 0, budget=budget)
    t = factory.build()
    check_answers(rs, t.chat(rs))
    assert server.creations == 1 and budget.reserved_cost == 0  # the hold is given back once the batch is in
    spent = budget.cost
    assert 0 < spent <= worst  # what it used, at the batch price, never more than its worst case
    assert spent > worst * 0.000001
    with pytest.raises(BudgetExhausted, match="does not fit"):
        t.chat(reqs(3, "r"))
    assert server.creations == 1 and budget.reserved_cost == 0  # nothing submitted, nothing held
    t.close()


def test_file_mode_writes_vllm_run_batch_input_and_reads_its_output(tmp_path):
    sec = section("batch_file", None, batch_wait_s=0)
    t, _ = teacher(sec, tmp_path)
    rs = reqs(4)
    with pytest.raises(BatchesInFlight) as e:
        t.chat(rs)
    assert "vllm run-batch -i" in str(e.value)
    t.close()
    folder = tmp_path / "teacher_batches"
    [inp] = folder.glob("*.input.jsonl")
    lines = [json.loads(x) for x in inp.read_text().splitlines()]
    assert all(x["method"] == "POST" and x["url"] == "/v1/chat/completions" and x["body"]["model"] == "m"
               for x in lines)
    # what `vllm run-batch -o` writes, in reverse order
    out = [{"id": f"vllm-{i}", "custom_id": x["custom_id"], "error": None, "response": {
        "status_code": 200, "request_id": f"r{i}", "body": {"choices": [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant", "content": "echo:" + x["body"]["messages"][-1]["content"]}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1}}}} for i, x in enumerate(lines)][::-1]
    inp.with_name(inp.name.replace(".input.", ".output.")).write_text("".join(json.dumps(o) + "\n" for o in out))
    t2, b2 = teacher(sec, tmp_path)
    check_answers(rs, t2.chat(rs))
    assert b2.stats.completion_tokens == 4
    assert len(list(folder.glob("*.input.jsonl"))) == 1  # nothing written again
    t2.close()


def test_distill_batches_lists_and_cancels(tmp_path, server):
    server.set(hold=True)
    sec = section("openai_batch", server, batch_wait_s=0)
    t, _ = teacher(sec, tmp_path)
    with pytest.raises(BatchesInFlight):
        t.chat(reqs(3))
    t.close()
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OPENAI_API_KEY": "k"}
    cli = [sys.executable, "-m", "pipeline.cli", "batches", str(tmp_path)]
    r = subprocess.run(cli, capture_output=True, text=True, env=env, timeout=60)
    bid = server.state.order[0]
    assert r.returncode == 0 and bid in r.stdout and "submitted" in r.stdout and "1 in flight" in r.stdout, r
    r = subprocess.run([*cli, "--cancel"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0 and f"cancel asked: {bid} (cancelled)" in r.stdout, r
    assert server.state.batches[bid]["_ended"] == "cancelled"
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "batches", str(tmp_path / "a" / "b")],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no batch journal" in r.stderr, r


def test_anthropic_lines_are_messages_requests_with_the_system_prompt_apart(tmp_path, server):
    t, _ = teacher(section("anthropic_batch", server), tmp_path)
    r = ChatRequest(messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
                    record_id="x")
    [c] = t.chat([r])
    assert c.text == "echo:hi"
    [line] = server.state.batches[server.state.order[0]]["_lines"]
    assert line["params"]["system"] == "be brief" and line["params"]["messages"] == [{"role": "user", "content": "hi"}]
    assert line["params"]["max_tokens"] == r.sampling.max_tokens and "seed" not in line["params"]
    assert len(line["custom_id"]) <= 64 and line["custom_id"].isalnum()  # Anthropic's custom_id pattern
    t.close()


@pytest.mark.parametrize("backend", PROVIDERS)
def test_a_line_refused_as_the_rows_own_fault_is_not_retried_and_is_a_drop(tmp_path, server, backend):
    server.set(bad_every=3)
    t, b = teacher(section(backend, server), tmp_path)
    rs = reqs(6)
    out = t.chat(rs)
    lines = server.state.batches[server.state.order[0]]["_lines"]
    refused = {ln["custom_id"] for i, ln in enumerate(lines) if i % 3 == 1}
    bad = [i for i, k in enumerate(t.keys(rs)) if k in refused]
    assert len(bad) == 2
    assert [i for i, c in enumerate(out) if not c.ok] == bad
    assert all(out[i].error.kind == "bad_request" and not out[i].unanswered for i in bad)
    assert server.creations == 1 and b.stats.faults == {"batch_failed_errored_bad_request": 2}
    t.close()


def test_a_batch_that_fails_as_a_whole_is_submitted_again(tmp_path, server):
    server.set(fail_first=1)
    t, b = teacher(section("openai_batch", server), tmp_path)
    rs = reqs(4)
    check_answers(rs, t.chat(rs))
    assert server.creations == 2 and server.paid_twice() == {}
    assert b.stats.faults == {"batch_retried_errored_server_error": 4}
    t.close()


def test_the_intent_is_journaled_before_create_and_the_id_before_any_poll(tmp_path, server):
    from pipeline.teacher.batch_openai import OpenAIBatchProvider

    sec = section("openai_batch", server)
    folder = batch_dir(sec, tmp_path)
    journal = BatchJournal(folder)
    seen = []

    class Watched(OpenAIBatchProvider):
        def create(self, key, path):
            [rec] = journal.records()
            seen.append(("create", rec["state"], rec["key"] == key, path.read_bytes().count(b"\n")))
            return super().create(key, path)

        def status(self, batch_id):
            seen.append(("poll", journal.records()[0]["state"], journal.records()[0]["batch_id"] == batch_id))
            return super().status(batch_id)

    t = TeacherFactory(sec, tmp_path, 0).build(BatchTeacher(sec, Watched(sec), folder))
    check_answers(reqs(3), t.chat(reqs(3)))
    assert seen[0] == ("create", "intent", True, 3) and seen[1] == ("poll", "submitted", True)
    t.close()


def test_answers_downloaded_before_a_crash_are_not_paid_again(tmp_path, server):
    sec = section("openai_batch", server)
    t, _ = teacher(sec, tmp_path)
    got = []

    class Crash(Exception):
        pass

    def on_done(i, c):
        got.append(i)
        if len(got) == 2:
            raise Crash  # the process dies while the answers are being handed out

    rs = reqs(5)
    with pytest.raises(Crash):
        t.chat(rs, on_done=on_done)
    t.close()
    t2, b2 = teacher(sec, tmp_path)
    out = t2.chat(rs)
    check_answers(rs, out)
    assert server.creations == 1 and server.paid_twice() == {}
    assert all(c.cached for c in out) and b2.stats.sent == 0
    t2.close()
