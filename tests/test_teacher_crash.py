"""A native crash of the embedded teacher is contained: SIGSEGV its server child in the middle of an Orca run.

The child is restarted on the same socket, only the requests in flight are
sent again, and the run ends with every row present exactly once. Past
`teacher.restarts` the stage stops with TeacherUnavailable (exit 4) naming
the signal and the server's log.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from pipeline.config import TeacherSection
from pipeline.context import RunContext
from pipeline.errors import TeacherUnavailable, exit_code_for
from pipeline.records import new_row
from pipeline.stages.orca import OrcaConfig, run_orca
from pipeline.store import Dataset, DatasetWriter
from pipeline.teacher import TeacherFactory
from pipeline.teacher.embedded import EmbeddedTeacher

pytestmark = pytest.mark.teacher

TASKS = ["Name a fruit.", "Name a colour.", "Name a country in Europe.", "Give a synonym for happy.",
         "Name an animal that can fly.", "What is two plus two?", "Name a musical instrument.",
         "Name a planet.", "Name a vegetable.", "Give an antonym for cold."]


def make_input(path: Path) -> Path:
    w = DatasetWriter(path, "import")
    w.write_shard(0, [new_row(t, "", "", origin="import") for t in TASKS])
    w.write_manifest()
    return path


def events(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def segv_mid_request(teachers: list, log: Path, after_done: int, stop: threading.Event, killed: list) -> None:
    """SIGSEGV the child while it is decoding a request (received, not answered, for 0.3 s)."""
    while not stop.is_set():
        ev = events(log)
        done = [e for e in ev if e["event"] == "done"]
        recv = [e for e in ev if e["event"] == "recv"]
        if teachers and len(done) >= after_done and len(recv) > len(done) and time.time() - done[-1]["t"] > 0.3:
            pid = teachers[0].servers[0].pid
            os.kill(pid, signal.SIGSEGV)
            killed.append(pid)
            return
        time.sleep(0.05)


def orca_with_embedded(tmp_path: Path, restarts: int, after_done: int):
    src = make_input(tmp_path / "in")
    rlog = tmp_path / "requests.jsonl"
    sec = TeacherSection(backend="llamacpp", n_ctx=1024, n_threads=2, replicas=1, restarts=restarts, timeout_s=300,
                         cache_path=str(tmp_path / "cache.sqlite"))
    teachers: list[EmbeddedTeacher] = []

    def factory():
        t = EmbeddedTeacher(sec, seed=5, workdir=tmp_path / "w", request_log=rlog)
        teachers.append(t)
        return TeacherFactory(sec, tmp_path / "w", 5).build(t)

    ctx = RunContext(run_id="crash", seed=5, workdir=tmp_path / "w", teacher_factory=factory, progress=False)
    stop, killed = threading.Event(), []
    watcher = threading.Thread(target=segv_mid_request, args=(teachers, rlog, after_done, stop, killed))
    watcher.start()
    try:
        m = run_orca(src, tmp_path / "out", ctx, OrcaConfig(max_tokens=32, truncated="keep", retry_truncated=False))
        return m, teachers, rlog, killed
    finally:
        stop.set()
        watcher.join()
        ctx.close()


def test_sigsegv_mid_orca_run_is_restarted_and_no_row_is_lost_or_asked_twice(tmp_path):
    m, teachers, rlog, killed = orca_with_embedded(tmp_path, restarts=2, after_done=3)
    assert killed, "the server was never killed mid-request"
    assert teachers[0].restarts == 1
    kept = Dataset(tmp_path / "out").read(["id"]).column(0).to_pylist()
    rejected = Dataset(tmp_path / "out").rejected()
    dropped = rejected.read(["id"]).column(0).to_pylist() if rejected is not None else []
    ids = [new_row(t, "", "", origin="import")["id"] for t in TASKS]
    assert sorted(kept + dropped) == sorted(ids)          # every row exactly once
    assert m["rows_in"] == len(TASKS)
    ev = events(rlog)
    done = Counter(e["body"] for e in ev if e["event"] == "done")
    recv = Counter(e["body"] for e in ev if e["event"] == "recv")
    assert max(done.values()) == 1                       # nothing answered was asked again
    assert len(done) == len(TASKS)
    resent = {b for b, n in recv.items() if n > 1}
    assert resent and len(resent) <= 2                   # only the requests in flight (2 per child)
    assert len({e["pid"] for e in ev}) == 2              # two server lives
    assert "killed by SIGSEGV" in teachers[0].servers[0].log.read_text()


def test_past_the_restart_limit_the_stage_stops_with_exit_4_naming_signal_and_log(tmp_path):
    with pytest.raises(TeacherUnavailable) as e:
        orca_with_embedded(tmp_path, restarts=0, after_done=1)
    msg = str(e.value)
    assert "SIGSEGV" in msg and ".log" in msg and "\n" not in msg
    assert exit_code_for(e.value) == 4
    assert not (tmp_path / "out" / "_manifest.json").exists()
