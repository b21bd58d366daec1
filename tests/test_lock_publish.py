import os
import signal
import subprocess
import sys

import pytest

from pipeline.errors import Locked
from pipeline.refresh.publish import latest, publish, staging_dir, versions
from pipeline.store.lock import RunLock

HOLD = """
import sys, time
from pipeline.store.lock import RunLock
RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(60)
"""


def _holder(path):
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_second_run_is_refused_while_first_holds(tmp_path):
    path = tmp_path / "refresh.lock"
    p = _holder(path)
    try:
        with pytest.raises(Locked, match=f"pid {p.pid}"):
            RunLock(path).acquire()
    finally:
        p.kill()
        p.wait()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    path = tmp_path / "refresh.lock"
    p = _holder(path)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    lock = RunLock(path).acquire()
    try:
        assert lock.took_over["pid"] == p.pid
    finally:
        lock.release()
    with RunLock(path) as again:  # a clean release leaves nothing to take over
        assert again.took_over is None


def _stage(pub, version, text):
    d = staging_dir(pub, version)
    (d / "data.txt").write_text(text)
    return d


def test_publish_switches_latest_atomically_and_prunes(tmp_path):
    pub = tmp_path / "release"
    assert latest(pub) is None
    for i in range(4):
        publish(pub, f"v{i}", _stage(pub, f"v{i}", f"release {i}"), keep=2)
        assert (pub / "latest" / "data.txt").read_text() == f"release {i}"
        assert os.path.islink(pub / "latest")
    assert [v.name for v in versions(pub)] == ["v2", "v3"]
    assert latest(pub).name == "v3"
    with pytest.raises(FileExistsError):
        publish(pub, "v3", _stage(pub, "v3", "again"))


def test_reader_never_sees_a_half_release(tmp_path):
    """A reader polling latest/ during many publishes always sees one whole version."""
    pub = tmp_path / "release"
    publish(pub, "v000", _stage(pub, "v000", "0|0"), keep=3)
    reader = subprocess.Popen([sys.executable, "-c", """
import sys, time
bad = 0
end = time.time() + 3
while time.time() < end:
    try:
        a = open(sys.argv[1] + '/latest/data.txt').read()
    except FileNotFoundError:
        bad += 1; continue
    x, y = a.split('|')
    bad += x != y
print(bad)
""", str(pub)], stdout=subprocess.PIPE, text=True)
    for i in range(1, 200):
        publish(pub, f"v{i:03d}", _stage(pub, f"v{i:03d}", f"{i}|{i}"), keep=3)
    assert reader.communicate(timeout=30)[0].strip() == "0"
