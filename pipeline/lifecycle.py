"""Child processes that die with their parent.

Reads and writes nothing. Every process distill starts (the embedded teacher's
server, MinHash's worker pool) calls `die_with_parent` first thing, so a
`kill -9` of the distill process, a cron timeout or an OOM kill never leaves
workers or servers behind holding memory, ports or file locks.

A third, for processes that distill does not start itself (a local Ray
cluster's raylet starts agents that outlive it): `start_reaper` runs a small
watcher process that keeps a list of the parent's descendants and, once the
parent is gone, SIGKILLs every one still running (Linux /proc).

Two mechanisms for the children distill starts, because each has a gap the other covers:
- Linux `prctl(PR_SET_PDEATHSIG, SIGKILL)`: the kernel kills the child the
  moment its parent dies, even while the child is deep in native code holding
  the GIL. The kernel ties it to the parent *thread* that started the child, so
  it is only armed when that thread is the parent's main thread (`arm_pdeathsig`
  says so); a child of a short-lived thread would otherwise die with the thread.
- A watcher thread that polls `os.getppid()` (every platform, any parent
  thread): when the parent is gone the child is re-parented and exits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
POLL_S = 0.5

_libc = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:  # no libc to load (an unusual Linux): the watcher thread still works
        _libc = None


def set_pdeathsig() -> bool:
    """Ask the kernel to SIGKILL this process when its parent (thread) dies; False where unsupported."""
    if _libc is None:
        return False
    return _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0


def die_with_parent(parent_pid: int | None = None, pdeathsig: bool = True) -> None:
    """Called in a child: exit as soon as the parent process is gone.

    `parent_pid` is the pid the child expects as its parent (default: the
    current one); if the parent already died before this call, exit now.
    `pdeathsig=False` skips the kernel signal (parent started us from a thread
    other than its main thread; see the module docstring).
    """
    expected = parent_pid if parent_pid is not None else os.getppid()
    if pdeathsig:
        set_pdeathsig()
    if os.getppid() != expected:
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(POLL_S)
            if os.getppid() != expected:
                os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def started_from_main_thread() -> bool:
    """Whether a child started now may arm PR_SET_PDEATHSIG (see the module docstring)."""
    return threading.current_thread() is threading.main_thread()


def become_subreaper() -> bool:
    """Make orphaned descendants re-parent to this process instead of init (Linux), so it can see
    and reap them; the test suite uses it to check that it leaves no process behind."""
    if _libc is None:
        return False
    return _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids of every process (Linux /proc; empty elsewhere)."""
    kids: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return kids
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read().decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(name))
    return kids


def descendants(pid: int) -> set[int]:
    """Every live descendant of `pid` (Linux /proc; empty elsewhere)."""
    kids = children_map()
    out, todo = set(), [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def start_reaper() -> bool:
    """Start a watcher that kills this process's descendants when it dies (Linux); False elsewhere."""
    if not os.path.isdir("/proc/self"):
        return False
    subprocess.Popen([sys.executable, "-m", "pipeline.lifecycle", str(os.getpid())], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    return True


def reap_when_gone(parent: int) -> None:
    """The watcher's loop: remember the parent's descendants; when it is gone, kill what is left."""
    me = os.getpid()
    known: set[int] = set()
    while os.getppid() == parent:
        known |= descendants(parent) - {me}
        time.sleep(POLL_S)
    for _ in range(3):  # a killed process's own children appear under the subreaper or init
        known |= {d for p in known for d in descendants(p)} - {me}
        for p in known:
            try:
                os.kill(p, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.2)


if __name__ == "__main__":
    reap_when_gone(int(sys.argv[1]))
