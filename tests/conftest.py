"""Shared fixtures: the embedded teacher over real HTTP, the shared real data, temp workdirs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
SUBREAPER = pytest.StashKey[bool]()
SHARED_DATA = Path(os.environ.get("DISTILL_SHARED_DATA", ROOT.parent / "shared" / "data"))


OUR_CHILDREN = ("pipeline.teacher.embedded_server", "multiprocessing", "pipeline.cli", "llama_cpp")


def pytest_configure(config):
    # Orphans of killed test subprocesses re-parent to pytest, so the end of the session sees them.
    from pipeline.lifecycle import become_subreaper
    config.stash[SUBREAPER] = become_subreaper()


def pytest_sessionfinish(session, exitstatus):
    """The suite leaves nothing behind: any child still running 10 s after the last test is
    killed and named; one of distill's own kinds fails the session."""
    if not session.config.stash.get(SUBREAPER, False):
        return
    import signal
    from multiprocessing import resource_tracker

    from proc_support import children_map, cmdline, wait_gone

    # pytest's own resource tracker (in-process worker pools) lives until pytest exits: not a leak
    own = {getattr(resource_tracker._resource_tracker, "_pid", None)}
    left = wait_gone(set(children_map().get(os.getpid(), [])) - own, 10.0)
    if not left:
        return
    names = "; ".join(f"{p}: {cmdline(p)[:120]}" for p in sorted(left))
    ours = [p for p in left if any(k in cmdline(p) for k in OUR_CHILDREN)]
    for p in left:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    line = f"processes left behind by the suite (killed): {names}"
    reporter.write_line(line) if reporter is not None else print(line)
    if ours:
        session.exitstatus = 1


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (or $DISTILL_SHARED_DATA); skips with the reason when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared real data not found at {SHARED_DATA} (set DISTILL_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def teacher_server(tmp_path_factory):
    """The embedded SmolLM2 teacher served by llama.cpp on a free loopback port.

    Yields the base URL (http://127.0.0.1:PORT/v1). One server for the whole
    session: it answers one request at a time, so tests keep max_tokens small.
    """
    from pipeline.teacher.server import start_server

    log = tmp_path_factory.mktemp("teacher") / "server.log"
    server = start_server(log=log, n_threads=2, timeout_s=180)
    yield server.base_url
    server.close()


@pytest.fixture
def openai_teacher_config(teacher_server):
    """A [teacher] section pointing the openai backend at the embedded server."""
    from pipeline.config import TeacherSection

    return TeacherSection(backend="openai", base_url=teacher_server, model="smollm2-135m-instruct",
                          concurrency=4, timeout_s=120, cache=False)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for the session (2 CPUs, no dashboard); skips without the ray extra."""
    ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'distill[ray]'")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()
