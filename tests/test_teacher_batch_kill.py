"""`distill orca` on a batch teacher, as a subprocess against the loopback stand-in (tests/batchserver.py).

End to end: expiry, failed lines and shuffled results, and every input row is
kept or rejected exactly once, none for a teacher error, nothing paid twice.
Kill: SIGKILL once the first batch is submitted and journaled, before any
result is downloaded; the rerun polls that batch instead of submitting it
again. Everything is counted at the stand-in.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from batchserver import BatchServer

from pipeline.teacher.batch_journal import BatchJournal

ROOT = Path(__file__).resolve().parent.parent
ROWS = 10
SHARD_ROWS = 5


def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                OPENAI_API_KEY="batch-key", ANTHROPIC_API_KEY="batch-key", HF_HUB_OFFLINE="1",
                TRANSFORMERS_OFFLINE="1", DISTILL_PROGRESS_INTERVAL="0.2")


def distill(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], env=env(), cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


@pytest.fixture(scope="module")
def seed_input(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("batch-input")
    p = distill("import", str(ROOT / "data" / "seed_tasks.jsonl"), "--limit", str(ROWS), "--out", str(root / "in"),
                "--workdir", str(root / "w"), "--run-id", "seed", cwd=root)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    return root / "in"


def config(path: Path, backend: str, srv: BatchServer) -> Path:
    t = {"backend": backend, "base_url": srv.base_url, "model": "m", "batch_poll_s": 0.05, "max_retries": 1,
         "timeout_s": 10.0}
    path.write_text("[teacher]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in t.items()))
    return path


def orca(tmp: Path, src: Path, conf: Path) -> subprocess.Popen:
    return distill("orca", str(src), "-c", str(conf), "--out", str(tmp / "out"), "--workdir", str(tmp / "work"),
                   "--run-id", "r", "--shard-rows", str(SHARD_ROWS), "--no-progress", cwd=tmp)


def rows_out(out: Path) -> tuple[Counter, Counter]:
    """(row id -> times kept, drop reason -> rows) over the output folder."""
    kept, reasons = Counter(), Counter()
    for f in sorted(out.rglob("*.parquet")):
        t = pq.read_table(f).to_pylist()
        if "rejected" in f.parts:
            reasons.update(r.get("drop_reason") for r in t)
            kept.update(r["id"] for r in t)
        else:
            kept.update(r["id"] for r in t)
    return kept, reasons


def sent_per_line(srv: BatchServer) -> Counter:
    return Counter(ln["custom_id"] for b in srv.state.batches.values() for ln in b["_lines"])


@pytest.mark.parametrize("backend", ["openai_batch", "anthropic_batch"])
def test_orca_through_expiry_failures_and_shuffled_results_loses_no_row(tmp_path, seed_input, backend):
    with BatchServer(tmp_path / "state.json") as srv:
        srv.set(expire_first=1, expire_after=2, fail_every=3, shuffle=True)
        p = orca(tmp_path, seed_input, config(tmp_path / "distill.toml", backend, srv))
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        m = json.loads((tmp_path / "out" / "_manifest.json").read_text())
        kept, reasons = rows_out(tmp_path / "out")
        assert m["rows_in"] == ROWS and sum(kept.values()) == ROWS and set(kept.values()) == {1}
        assert not [r for r in reasons if r and "teacher" in r], reasons
        assert srv.paid_twice() == {}
        assert m["totals"]["teacher_batch_retried_expired"] >= 1
        assert m["totals"]["teacher_batch_retried_errored_server_error"] >= 1
        assert "batch(es) in flight" in err or "submitted batch" in err


@pytest.mark.parametrize("backend", ["openai_batch", "anthropic_batch"])
def test_sigkill_between_submit_and_download_then_the_rerun_pays_nothing_twice(tmp_path, seed_input, backend):
    with BatchServer(tmp_path / "state.json") as srv:
        srv.set(hold=True)
        conf = config(tmp_path / "distill.toml", backend, srv)
        p = orca(tmp_path, seed_input, conf)
        journal = BatchJournal(tmp_path / "work" / "teacher_batches")
        deadline = time.monotonic() + 120
        try:
            while not any(r["state"] == "submitted" for r in journal.records()):
                assert p.poll() is None and time.monotonic() < deadline, p.communicate(timeout=5)
                time.sleep(0.05)
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(30)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        assert p.returncode == -signal.SIGKILL
        assert srv.creations == 1 and srv.billed == {}  # submitted, nothing processed or downloaded
        [first] = srv.state.order

        srv.set(hold=False)
        p = orca(tmp_path, seed_input, conf)
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        kept, reasons = rows_out(tmp_path / "out")
        assert sum(kept.values()) == ROWS and set(kept.values()) == {1}
        assert not [r for r in reasons if r and "teacher" in r], reasons
        assert srv.paid_twice() == {}
        assert set(sent_per_line(srv).values()) == {1}  # no line was ever submitted twice
        assert srv.state.batches[first]["_ended"] == "completed"
        assert journal.records()[0]["batch_id"] == first and journal.records()[0]["state"] == "collected"


def test_run_exits_9_with_batches_in_flight_and_the_rerun_collects_them(tmp_path, seed_input):
    with BatchServer(tmp_path / "state.json") as srv:
        srv.set(hold=True)
        conf = config(tmp_path / "distill.toml", "openai_batch", srv)
        conf.write_text(conf.read_text() + "batch_wait_s = 0.5\n")
        p = orca(tmp_path, seed_input, conf)
        _, err = p.communicate(timeout=120)
        assert p.returncode == 9, err
        last = err.strip().splitlines()[-1]
        assert last.startswith("error: ") and "in flight" in last and "rerun" in last, err
        assert "[teacher openai_batch] 1 batch(es) in flight (1 in_progress): 0/5 lines done" in err, err  # progress
        assert srv.creations == 1 and not (tmp_path / "out" / "_manifest.json").exists()
        srv.set(hold=False)
        conf.write_text(conf.read_text().replace("batch_wait_s = 0.5\n", ""))
        p = orca(tmp_path, seed_input, conf)
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        kept, _ = rows_out(tmp_path / "out")
        assert sum(kept.values()) == ROWS and set(sent_per_line(srv).values()) == {1} and srv.paid_twice() == {}
