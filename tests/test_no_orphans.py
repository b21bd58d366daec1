"""No orphans: after kill -9 of a distill process, none of its children outlive it by more than 10 s."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from minhash_support import synthetic_rows, write_dataset
from proc_support import cmdline, descendants, wait_gone

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")

DISTILL = [sys.executable, "-c", "from pipeline.cli import main; main()"]
ROOT = Path(__file__).resolve().parent.parent


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", DISTILL_PROGRESS_INTERVAL="1")
    return subprocess.Popen(DISTILL + args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def children_when(proc: subprocess.Popen, ready, timeout_s: float = 120.0) -> set[int]:
    """Poll proc's descendants until `ready(their cmdlines)`; fails if proc ends first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited early ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}"
        kids = descendants(proc.pid)
        if ready([cmdline(p) for p in kids]):
            return kids
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the expected children never appeared")


def kill9_and_check(proc: subprocess.Popen, kids: set[int]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = wait_gone(kids, 10.0)
    names = [cmdline(p)[:150] for p in left]
    for p in left:  # do not leave them to the next test either
        os.kill(p, signal.SIGKILL)
    assert not left, f"orphans 10 s after kill -9: {names}"


def test_kill9_of_distill_minhash_leaves_no_worker(tmp_path):
    src = write_dataset(tmp_path / "in", synthetic_rows(50_000, 10_000, seed=3), shard_rows=5_000)  # above INLINE_BELOW_ROWS: worker processes
    proc = start(["minhash", str(src), "--out", str(tmp_path / "out"), "--workers", "2"], tmp_path)
    kids = children_when(proc, lambda cmds: any("multiprocessing" in c for c in cmds))
    kill9_and_check(proc, kids)


@pytest.mark.teacher
def test_kill9_of_distill_run_mid_stage_leaves_no_teacher_server(tmp_path):
    proc = start(["run", "--workdir", str(tmp_path / "work"), "--no-progress"], tmp_path)
    kids = children_when(proc, lambda cmds: any("pipeline.teacher.embedded_server" in c for c in cmds))
    time.sleep(1.0)  # mid-request, not mid-start
    kill9_and_check(proc, kids | descendants(proc.pid))


@pytest.mark.teacher
def test_teacher_serve_answers_and_its_server_dies_with_it(tmp_path):
    import json
    import urllib.request

    from pipeline.teacher.server import free_port

    port = free_port()
    proc = start(["teacher", "serve", "--port", str(port), "--n-ctx", "512"], tmp_path)
    kids = children_when(proc, lambda cmds: any("pipeline.teacher.embedded_server" in c for c in cmds))
    body = json.dumps({"model": "smollm2-135m-instruct", "max_tokens": 4, "temperature": 0,
                       "messages": [{"role": "user", "content": "Say hi."}]}).encode()
    deadline, answer = time.monotonic() + 60, None
    while answer is None and time.monotonic() < deadline:
        try:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"})
            answer = json.loads(urllib.request.urlopen(req, timeout=30).read())
        except OSError:
            time.sleep(0.3)
    assert answer is not None and answer["choices"][0]["message"]["content"]
    kill9_and_check(proc, kids)


def test_kill9_of_a_ray_driver_started_by_distill_leaves_no_ray_process(tmp_path):
    pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'distill[ray]'")
    src = write_dataset(tmp_path / "in", synthetic_rows(2_000, 400, seed=5), shard_rows=500)
    proc = start(["minhash", str(src), "--out", str(tmp_path / "out"), "--executor", "ray"], tmp_path)
    kids = children_when(proc, lambda cmds: any("raylet" in c for c in cmds) and any("gcs_server" in c for c in cmds))
    time.sleep(2.0)  # let the driver's workers start too
    kill9_and_check(proc, kids | descendants(proc.pid))
