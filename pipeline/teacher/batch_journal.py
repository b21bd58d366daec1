"""The batch journal: which batches this workdir submitted, in which state, and what came back.

Folder (default `<workdir>/teacher_batches/`, or `teacher.batch_dir`):

    journal.json          {"batches": [record, ...]} in submission order, rewritten
                          atomically (temporary file, fsync, rename, fsync of the folder)
    journal.lock          flock'd around every read-modify-write (Ray workers share it)
    <key>.input.jsonl     a batch's lines, written and fsynced before its intent is journaled
    <key>.results.jsonl   its LineResults (batch_format.py), written atomically once it ended

A record: `key` (ours, also sent as the batch's metadata where the provider has
metadata), `provider`, `endpoint`, `state`, `batch_id`, `count` (lines),
`created` (unix time of the intent), `status` and `counts` (the provider's, as
last polled), `reason` (new, or the retry reason of its lines).
States: intent (journaled before the create call) -> submitted (the provider's
id journaled right after the create call returned) -> collected (results file
written); or abandoned (an intent whose create never reached the provider).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import StoreWriteError

JOURNAL = "journal.json"
LIVE = ("intent", "submitted")  # batches whose results are not in yet


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes) -> None:
    """`data` at `path`, all or nothing, on disk before this returns."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


class BatchJournal:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / JOURNAL

    def __repr__(self) -> str:
        return f"BatchJournal({str(self.folder)!r})"

    def failed(self, e: BaseException) -> StoreWriteError:
        return StoreWriteError(f"the batch journal {self.folder} cannot be written ({e}); free space or fix its "
                               "permissions, or set teacher.batch_dir elsewhere")

    @contextmanager
    def locked(self) -> Iterator[None]:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.folder / "journal.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise self.failed(e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def records(self) -> list[dict[str, Any]]:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))["batches"]
        except FileNotFoundError:
            return []

    def get(self, key: str) -> dict[str, Any] | None:
        return next((r for r in self.records() if r["key"] == key), None)

    def change(self, fn: Callable[[list[dict[str, Any]]], None]) -> list[dict[str, Any]]:
        """Apply `fn` to the records under the lock and write them durably; the new records."""
        with self.locked():
            recs = self.records()
            fn(recs)
            try:
                write_durably(self.path, json.dumps({"batches": recs}, indent=1).encode("utf-8"))
            except OSError as e:
                raise self.failed(e) from None
            return recs

    def add(self, record: dict[str, Any]) -> None:
        self.change(lambda recs: recs.append(record))

    def update(self, key: str, **fields: Any) -> None:
        def fn(recs: list[dict[str, Any]]) -> None:
            for r in recs:
                if r["key"] == key:
                    r.update(fields, updated=time.time())
        self.change(fn)

    def input_path(self, key: str) -> Path:
        return self.folder / f"{key}.input.jsonl"

    def results_path(self, key: str) -> Path:
        return self.folder / f"{key}.results.jsonl"

    def write_input(self, key: str, lines: list[bytes]) -> Path:
        path = self.input_path(key)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_durably(path, b"".join(lines))
        except OSError as e:
            raise self.failed(e) from None
        return path

    def write_results(self, key: str, lines: list[str]) -> None:
        try:
            write_durably(self.results_path(key), "".join(s + "\n" for s in lines).encode("utf-8"))
        except OSError as e:
            raise self.failed(e) from None
