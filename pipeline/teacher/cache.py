"""The SQLite response cache: a rerun, a resumed run or a refresh never pays twice.

Key: `request_key(model, request, seed, endpoint)`, a hash of the endpoint's
identity (the backend and its base_url, or its model path for a local engine:
another server with the same model name never gets these answers), model,
messages, sampling parameters, sample index and the per-request seed. (Rows
written before the endpoint was part of the key are not served: their keys no
longer match.) A row holds either the
completion (text, finish reason, usage, logprobs) or the error of the last
attempt. Only completions are served; stored errors are retried on the next
run and their row replaced.

WAL mode with synchronous=NORMAL: a kill (even SIGKILL) mid-write loses at
most the transaction in progress, never the database; several processes (or
Ray workers) may share one file, waiting on each other via busy_timeout.
Each answer is committed as it arrives, before the stage sees it (WAL
commits cost no fsync with synchronous=NORMAL and survive a killed process),
so a kill repeats at most the requests that were in flight. A cache that
cannot be opened or written (full disk, permissions, not a database) is a
StoreWriteError: one line, exit 5.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterable

from ..errors import StoreWriteError
from .base import ChatRequest, Completion, OnDone, TeacherLayer, Usage, derive_seed, endpoint_identity, request_key

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    ok INTEGER NOT NULL,
    text TEXT,
    finish_reason TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    logprobs TEXT,
    error_kind TEXT,
    error_message TEXT,
    attempts INTEGER,
    created_at REAL NOT NULL
)
"""
_PUT = "INSERT OR REPLACE INTO responses VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"


class ResponseCache:
    def __init__(self, path: str | Path, *, batch_rows: int = 1, batch_s: float = 0.5):
        """`batch_rows`: answers per commit (1: each answer is committed before it is used)."""
        self.path = Path(path)
        self._db = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we open transactions ourselves (one per batch).
            self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
        except (sqlite3.Error, OSError) as e:
            if self._db is not None:
                self._db.close()
            raise self._failed("cannot be opened", e) from None
        self.batch_rows, self.batch_s = batch_rows, batch_s
        self._pending: list[tuple] = []
        self._last_flush = time.monotonic()
        self._lock = threading.RLock()  # one connection, chat() calls from several threads (one transaction at a time)

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path)!r})"

    def _failed(self, what: str, e: BaseException) -> StoreWriteError:
        return StoreWriteError(f"the teacher's response cache {self.path} {what} ({e}); free space or fix its "
                               "permissions, or set teacher.cache_path elsewhere (teacher.cache = false: no cache)")

    def get_many(self, keys: list[str]) -> dict[str, Completion]:
        """The stored completions among `keys` (errors are not served)."""
        try:
            with self._lock:
                return self._get_many(keys)
        except sqlite3.Error as e:
            raise self._failed("cannot be read", e) from None

    def _get_many(self, keys: list[str]) -> dict[str, Completion]:
        found: dict[str, Completion] = {}
        uniq = list(dict.fromkeys(keys))
        for i in range(0, len(uniq), 500):  # SQLite's bound-parameter limit
            chunk = uniq[i:i + 500]
            q = ("SELECT key, model, text, finish_reason, prompt_tokens, completion_tokens, logprobs "
                 f"FROM responses WHERE ok = 1 AND key IN ({','.join('?' * len(chunk))})")
            for key, model, text, finish, pt, ct, lp in self._db.execute(q, chunk):
                found[key] = Completion(text=text, finish_reason=finish, usage=Usage(pt or 0, ct or 0),
                                        logprobs=json.loads(lp) if lp else None, cached=True, model=model)
        return found

    def put(self, key: str, model: str, c: Completion) -> None:
        with self._lock:
            self._put(key, model, c)

    def _put(self, key: str, model: str, c: Completion) -> None:
        err = c.error
        self._pending.append((
            key, model, 0 if err is not None else 1, c.text, c.finish_reason,
            c.usage.prompt_tokens, c.usage.completion_tokens,
            json.dumps(c.logprobs, ensure_ascii=False) if c.logprobs is not None else None,
            err.kind if err else None, err.message if err else None, c.attempts, time.time()))
        if len(self._pending) >= self.batch_rows or time.monotonic() - self._last_flush >= self.batch_s:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        rows, self._pending = self._pending, []
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(_PUT, rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            raise self._failed("cannot be written", e) from None

    def counts(self) -> dict[str, int]:
        ok, err = self._db.execute("SELECT COALESCE(SUM(ok), 0), COALESCE(SUM(1 - ok), 0) FROM responses").fetchone()
        return {"ok": int(ok), "errors": int(err)}

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._db.close()


class CachedTeacher(TeacherLayer):
    """Wraps a backend: hits are answered from the cache (cached=True) and not sent."""

    def __init__(self, inner, cache: ResponseCache, run_seed: int):
        super().__init__(inner)
        self.cache = cache
        self.run_seed = run_seed
        self.endpoint = endpoint_identity(inner)

    def __repr__(self) -> str:
        return f"CachedTeacher({self.inner!r}, {self.cache!r})"

    def keys(self, requests: Iterable[ChatRequest]) -> list[str]:
        return [request_key(self.model, r, derive_seed(self.run_seed, r.record_id, r.purpose, r.sample_index),
                            self.endpoint) for r in requests]

    def chat(self, requests: list[ChatRequest], on_done: OnDone | None = None) -> list[Completion]:
        keys = self.keys(requests)
        hits = self.cache.get_many(keys)
        out: list[Completion | None] = [hits.get(k) for k in keys]
        miss = [i for i, c in enumerate(out) if c is None]
        n_hit = len(requests) - len(miss)
        self.stats.requests += n_hit
        self.stats.cache_hits += n_hit
        for i, c in enumerate(out):
            if c is not None and on_done is not None:
                on_done(i, c)
        if miss:
            model = self.model
            put = self.cache.put

            def done(j: int, c: Completion) -> None:
                put(keys[miss[j]], model, c)
                if on_done is not None:
                    on_done(miss[j], c)

            try:
                got = self.inner.chat([requests[i] for i in miss], on_done=done)
            finally:
                self.cache.flush()
            for j, c in zip(miss, got):
                out[j] = c
        return out  # type: ignore[return-value]

    def close(self) -> None:
        try:
            self.cache.close()
        finally:
            self.inner.close()
