"""Process helpers for the tests: descendants of a pid, whether a pid still runs (Linux /proc), and a
script of scripts/ loaded as a module (the chaos tests drive the measuring scripts' own trials)."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

from pipeline.lifecycle import children_map, descendants

__all__ = ["children_map", "cmdline", "descendants", "load_script", "running", "sigkill", "wait_gone"]


def running(pid: int) -> bool:
    """True while pid is a live process (a zombie counts as gone; ours are reaped here)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat[stat.rindex(")") + 2] == "Z":
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return False
    return True


def wait_gone(pids: set[int], timeout_s: float = 10.0) -> set[int]:
    """The pids still running after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    left = set(pids)
    while left and time.monotonic() < deadline:
        left = {p for p in left if running(p)}
        if left:
            time.sleep(0.2)
    return {p for p in left if running(p)}


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def load_script(name: str) -> ModuleType:
    """scripts/<name>.py as the module `name`."""
    path = Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def sigkill(proc: subprocess.Popen) -> None:
    """SIGKILL a child and reap it; the caller asserts on `proc.returncode` (-9 when the kill landed)."""
    try:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
