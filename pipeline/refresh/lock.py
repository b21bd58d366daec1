"""A cron-grade run lock: one refresh at a time per workdir, stale locks taken over.

The lock is an `fcntl.flock` on `<workdir>/refresh.lock`, which the kernel
releases when the holder dies, so a crashed run can never wedge the next one.
The file also records the holder's pid, host and start time: a second run
reports who holds the lock, and a run that finds the record of a dead holder
says it is taking over.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from ..errors import Locked


class RunLock:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd: int | None = None
        self.took_over: dict | None = None  # the dead holder's record, when we took over

    def _read(self) -> dict | None:
        try:
            return json.loads(self.path.read_text() or "null")
        except (OSError, ValueError):
            return None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = self._read() or {}
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(holder.get("started", 0)))
            raise Locked(f"{self.path}: another run holds the lock (pid {holder.get('pid', '?')} on "
                         f"{holder.get('host', '?')}, since {since} UTC); it exits by itself when done") from None
        previous = self._read()
        if previous and previous.get("pid"):
            self.took_over = previous  # its holder died without cleaning up: flock is free
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)  # an empty file means "released cleanly"
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
