"""One writer per folder: an exclusive lock file, stale locks taken over, reentrant within a process.

The lock is an `fcntl.flock` on a file (`<out>/.lock` for a dataset folder,
`<run>/.lock` for `distill run`, `<publish_dir>/.refresh.lock` for a
refresh), which the kernel releases when the holder dies, so a crashed run
can never wedge the next one. The file also records the holder's pid, host
and start time: a second writer reports who holds the lock (Locked, exit 6),
and a writer that finds the record of a dead holder says it is taking over.

Within one process a lock is reentrant: a second `acquire` of a path this
process already holds counts up instead of failing (flock would refuse a
second open of the same file), so nested writers of one folder (a stage that
opens its folder twice, a test) do not lock themselves out. The file is
unlocked when the last holder releases it.

Object stores (s3://, gs://) cannot flock: `folder_lock` on a non-local
Location is a no-op, and one writer per folder there is the operator's job.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from ..errors import Locked
from .location import Location, resolve

LOCK_NAME = ".lock"

# realpath -> [fd, holders] of the locks this process holds
HELD: dict[str, list[int]] = {}


class RunLock:
    def __init__(self, path: str | Path, *, holder: str = "another run holds the lock",
                 hint: str = "it exits by itself when done"):
        self.path = Path(path)
        self.holder, self.hint = holder, hint
        self.key = os.path.realpath(self.path)
        self.held = False
        self.took_over: dict | None = None  # the dead holder's record, when we took over

    def read(self) -> dict | None:
        try:
            return json.loads(self.path.read_text() or "null")
        except (OSError, ValueError):
            return None

    def holder_record(self) -> dict:
        """The holder's record; a holder that has just taken the flock writes it a moment later."""
        for _ in range(40):
            holder = self.read() or {}
            if holder.get("pid"):
                return holder
            time.sleep(0.025)
        return holder

    def acquire(self) -> "RunLock":
        if self.held:
            return self
        if self.key in HELD:
            HELD[self.key][1] += 1
            self.held = True
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = self.holder_record()
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(holder.get("started", 0)))
            raise Locked(f"{self.path}: {self.holder} (pid {holder.get('pid', '?')} on "
                         f"{holder.get('host', '?')}, since {since} UTC); {self.hint}") from None
        previous = self.read()
        if previous and previous.get("pid"):
            self.took_over = previous  # its holder died without cleaning up: flock is free
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        os.fsync(fd)
        HELD[self.key] = [fd, 1]
        self.held = True
        return self

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        entry = HELD.get(self.key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del HELD[self.key]
        fd = entry[0]
        os.ftruncate(fd, 0)  # an empty file means "released cleanly"
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class NoLock:
    """What `folder_lock` gives for a folder on an object store, which has no flock."""

    took_over = None

    def acquire(self) -> "NoLock":
        return self

    def release(self) -> None:
        pass

    def __enter__(self) -> "NoLock":
        return self

    def __exit__(self, *exc) -> None:
        pass


def folder_lock(folder: "str | Path | Location") -> "RunLock | NoLock":
    """The lock of one output folder (`<folder>/.lock`): one writer at a time, a second exits 6."""
    loc = resolve(folder)
    if not loc.local:
        return NoLock()
    return RunLock(Path(loc.path) / LOCK_NAME, holder="another command is writing this folder",
                   hint="wait for it to finish, or write to another --out")
