"""The batch teacher: the Teacher protocol over a provider's batch API, journaled so nothing is lost or paid twice.

`BatchTeacher.chat(requests)` turns the requests into batch lines whose
`custom_id` is the request key (base.request_key: the response cache's key),
submits them through a provider (batch_openai.py, batch_anthropic.py,
batch_file.py) in batches within the provider's limits, polls every
`teacher.batch_poll_s` seconds, and answers each request as its batch's
results come in (`on_done`: the cache layer stores it then). Requests asked
twice in one call are sent once.

Never paid twice. The journal (batch_journal.py) is written before and after
each create call: (1) the batch's lines are written and fsynced, (2) an
*intent* record with our own batch key is journaled, (3) the create call
(sending the key as the batch's metadata where the provider has any), (4) the
provider's batch id is journaled, before any poll. Every chat first looks at
the journal: a request in a live batch is polled, never resubmitted; a
request with a result on disk is answered from it. An intent without an id
(a kill, or a lost answer, between (2) and (4)) is looked up at the provider
before anything is submitted: by metadata (OpenAI), by size and creation time
(Anthropic, which has no batch metadata), by the input file (file mode); found,
it is adopted, else marked abandoned and its lines are free to go again.
The window that remains: with Anthropic, two batches of the same size created
by other clients of the same workspace between the intent and the lookup could
be mistaken for ours (the oldest is adopted). An uploaded input file whose
create never happened is left at OpenAI (files cost no tokens).

Retries. An expired or canceled line (never processed, never paid) and a line
that failed for a reason a new batch may fix (429, 5xx) go into a new batch,
up to `teacher.batch_retries` times per call; a line that is the row's own
fault (HTTP 400, invalid_request_error) is not retried. Each is counted in
`stats.faults` as `batch_retried_<reason>` / `batch_failed_<reason>`, which
the shard markers and manifest carry as `teacher_batch_*` totals. A line that
still fails comes back as a TeacherError: expired lines as `timeout`, an
outside kind, so the row is unanswered (not dropped) and the next run asks again.

The wait. Every progress interval a line shows the batches' states and
counts. With `teacher.batch_wait_s` (`distill run --batch-wait`), a call
still waiting after that many seconds since the teacher was built raises
BatchesInFlight (exit 9): the batches stay journaled and a rerun collects them.

Money. Before each create, `reserve(requests)` is called with the batch's
requests; it may raise to refuse the batch (nothing is journaled or sent
then). The default reserves nothing; a spend cap plugs its reservation in here.
Reads and writes the journal folder only.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from .. import logs
from ..errors import BatchesInFlight, TeacherUnavailable
from .base import ChatRequest, Completion, OnDone, TeacherUsage, derive_seed, endpoint_identity, request_key
from .batch_format import LineResult, chunks, custom_ids
from .batch_journal import LIVE, BatchJournal

Reserve = Callable[[list[ChatRequest]], None]


def no_reservation(requests: list[ChatRequest]) -> None:
    """The default `reserve`: a batch is submitted without reserving anything."""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class BatchTeacher:
    def __init__(self, section: Any, provider: Any, folder: str | Path, *, seed: int = 0,
                 reserve: Reserve | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if not section.model:
            raise TeacherUnavailable(f"teacher.backend = {section.backend!r} needs teacher.model (the model the "
                                     "batches ask for; a batch API lists none to discover)")
        self.provider = provider
        self.backend = provider.name
        self.model = section.model
        self.endpoint = provider.endpoint
        self.identity = endpoint_identity(self)
        self.journal = BatchJournal(folder)
        self.run_seed = seed
        self.poll_s, self.wait_s, self.retries = section.batch_poll_s, section.batch_wait_s, section.batch_retries
        self.reserve: Reserve = reserve or no_reservation
        # past this age an intent's create call has ended, whoever made it: the upload's retries and the create
        self.stale_s = max(600.0, (section.max_retries + 2) * (section.timeout_s + 30.0))
        self.stats = TeacherUsage()
        self.clock, self.sleep = clock, sleep
        self.started = clock()
        self.ids: dict[str, list[str]] = {}                    # batch key -> its custom ids, in line order
        self.index: dict[str, list[str]] = {}                  # custom id -> batch keys that carry it
        self.results: dict[str, dict[str, LineResult]] = {}    # batch key -> its results, once collected
        self.fresh: set[str] = set()      # batches this process collected: their answers are paid by this run
        self.counted: set[str] = set()    # custom ids whose tokens this process counted
        self.last_line = self.clock()
        self.interval = logs.progress_interval()

    def __repr__(self) -> str:
        return f"BatchTeacher({self.provider!r}, model={self.model!r}, journal={str(self.journal.folder)!r})"

    def close(self) -> None:
        """Nothing to close: batches in flight stay journaled for the next run."""

    def key(self, req: ChatRequest) -> str:
        return request_key(self.model, req, self.seed_for(req), self.identity)

    def seed_for(self, req: ChatRequest) -> int:
        return derive_seed(self.run_seed, req.record_id, req.purpose, req.sample_index)

    # -- the journal's view ---------------------------------------------------

    def learn(self, bkey: str, ids: list[str] | None = None) -> list[str]:
        if bkey not in self.ids:
            if ids is None:
                try:
                    ids = custom_ids(self.journal.input_path(bkey).read_bytes().split(b"\n"))
                except FileNotFoundError:
                    ids = []
            self.ids[bkey] = ids
            for cid in ids:
                self.index.setdefault(cid, []).append(bkey)
        return self.ids[bkey]

    def result_of(self, bkey: str) -> dict[str, LineResult]:
        if bkey not in self.results:
            try:
                text = self.journal.results_path(bkey).read_text(encoding="utf-8")
            except FileNotFoundError:
                return {}
            self.results[bkey] = {r.custom_id: r for r in map(LineResult.from_json, filter(str.strip, text.splitlines()))}
        return self.results[bkey]

    def mine(self, recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The journal's records of this provider and endpoint (another backend's batches are not ours)."""
        return [r for r in recs if r.get("provider") == self.backend and r.get("endpoint") == self.endpoint]

    def resolve_intents(self) -> None:
        """Adopt or abandon each intent whose create call's outcome was never journaled (a dead process's,
        or this one's after a lost answer)."""
        recs = self.mine(self.journal.records())
        known = {r["batch_id"] for r in recs if r.get("batch_id")}
        for r in recs:
            if r["state"] != "intent" or self.in_progress_elsewhere(r):
                continue
            bid = self.provider.find(r["key"], float(r["created"]), int(r["count"]), known)
            if bid is not None:
                known.add(bid)
                self.journal.update(r["key"], state="submitted", batch_id=bid, status="submitted (found again)")
            else:
                self.journal.update(r["key"], state="abandoned", status="never created")

    def in_progress_elsewhere(self, rec: dict[str, Any]) -> bool:
        """The intent is another live process's (a Ray worker's) whose create call may still be running: its
        pid lives on this host and the intent is younger than any create call can take (else it is stale)."""
        young = time.time() - float(rec["created"]) < self.stale_s
        if rec.get("host") != socket.gethostname():
            return young
        if rec.get("pid") == os.getpid():
            return False
        return young and alive(int(rec.get("pid") or 0))

    def collect(self, rec: dict[str, Any]) -> dict[str, Any]:
        """Poll one submitted batch; once it ended, its results on disk and the record `collected`."""
        st = self.provider.status(rec["batch_id"])
        if not st.ended:
            if st.status != rec.get("status") or st.counts != rec.get("counts"):
                self.journal.update(rec["key"], status=st.status, counts=st.counts)
            return dict(rec, status=st.status, counts=st.counts)
        got: dict[str, LineResult] = {}
        for r in self.provider.results(st):
            if r.custom_id not in got or r.ok:
                got[r.custom_id] = r
        for cid in self.learn(rec["key"]):
            if cid not in got:  # never processed: expired, canceled, or the whole batch failed
                got[cid] = (LineResult(cid, "errored", error_kind="server_error", message=f"batch failed: {st.detail}")
                            if st.unprocessed == "errored" else LineResult(cid, st.unprocessed))
        self.journal.write_results(rec["key"], [r.to_json() for r in got.values()])
        self.results[rec["key"]] = got
        self.fresh.add(rec["key"])
        self.journal.update(rec["key"], state="collected", status=st.status, counts=st.counts)
        return dict(rec, state="collected", status=st.status, counts=st.counts)

    # -- submitting -------------------------------------------------------------

    def submit(self, reqs: dict[str, ChatRequest], reason: dict[str, str]) -> None:
        lines = [self.provider.line(k, self.model, r, self.seed_for(r)) for k, r in reqs.items()]
        keys = list(reqs)
        start = 0
        for chunk in chunks(lines, self.provider.max_requests, self.provider.max_bytes, self.provider.overhead):
            ks = keys[start:start + len(chunk)]
            start += len(chunk)
            self.reserve([reqs[k] for k in ks])
            bkey = uuid.uuid4().hex
            path = self.journal.write_input(bkey, chunk)
            why = Counter(reason.get(k, "new") for k in ks)
            self.journal.add({"key": bkey, "provider": self.backend, "endpoint": self.endpoint, "model": self.model,
                              "state": "intent", "batch_id": None, "count": len(chunk), "created": time.time(),
                              "pid": os.getpid(), "host": socket.gethostname(), "reason": dict(why), "status": "intent", "counts": {}})
            self.learn(bkey, ks)
            try:
                bid = self.provider.create(bkey, path)
            except TeacherUnavailable:
                # the create may have reached the provider with its answer lost: look before asking again
                bid = self.provider.find(bkey, time.time() - 60, len(chunk), set())
                if bid is None:
                    self.journal.update(bkey, state="abandoned", status="create failed")
                    raise
            self.journal.update(bkey, state="submitted", batch_id=bid, status="submitted")
            self.stats.sent += len(chunk)
            logs.plain_line(f"[teacher {self.backend}] submitted batch {bid}: {len(chunk)} requests "
                            f"(journal {self.journal.folder})")
            logs.event("batch_submitted", f"batch {bid}", batch=bid, requests=len(chunk), key=bkey)

    # -- the call -----------------------------------------------------------------

    def chat(self, requests: list[ChatRequest], on_done: OnDone | None = None) -> list[Completion]:
        if not requests:
            return []
        self.stats.requests += len(requests)
        where: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            where.setdefault(self.key(r), []).append(i)
        first = {k: requests[idx[0]] for k, idx in where.items()}
        out: list[Completion | None] = [None] * len(requests)
        pending = set(where)
        tries: Counter = Counter()

        def settle(k: str, c: Completion) -> None:
            pending.discard(k)
            if c.error is not None:
                self.stats.errors += len(where[k])
            for i in where[k]:
                out[i] = c
                if on_done is not None:
                    on_done(i, c)

        while pending:
            self.resolve_intents()
            recs = {r["key"]: r for r in self.mine(self.journal.records())}
            for bkey in recs:
                self.learn(bkey)
            wanted = {b for k in pending for b in self.index.get(k, ())}
            for bkey in sorted(wanted, key=list(recs).index):
                if recs[bkey]["state"] == "submitted":
                    recs[bkey] = self.collect(recs[bkey])
            again: dict[str, str] = {}
            live = 0
            for k in sorted(pending):
                state, res, bkey = self.state_of(k, recs)
                if state == "done":
                    settle(k, self.answer(k, res, bkey))
                elif state == "live":
                    live += 1
                elif state == "new":
                    again[k] = "new"
                elif res.retryable and tries[k] < self.retries:
                    tries[k] += 1
                    self.stats.retries += 1
                    self.stats.count_fault(f"batch_retried_{res.reason}")
                    again[k] = res.reason
                else:
                    self.stats.count_fault(f"batch_failed_{res.reason}")
                    settle(k, res.completion(self.model))
            if again:
                self.submit({k: first[k] for k in again}, again)
                continue
            if not pending:
                break
            self.wait([recs[b] for b in wanted if b in recs and recs[b]["state"] in LIVE], live)
        return out  # type: ignore[return-value]

    def state_of(self, k: str, recs: dict[str, dict[str, Any]]) -> tuple[str, LineResult | None, str | None]:
        """("done", result, batch) | ("live", None, batch) | ("failed", last result, batch) | ("new", None, None)."""
        last: tuple[LineResult, str] | None = None
        live = None
        for bkey in self.index.get(k, ()):
            rec = recs.get(bkey)
            if rec is None or rec["state"] == "abandoned":
                continue
            if rec["state"] in LIVE:
                live = bkey
                continue
            res = self.result_of(bkey).get(k)
            if res is not None and res.ok:
                return "done", res, bkey
            if res is not None:
                last = (res, bkey)
        if live is not None:
            return "live", None, live
        if last is not None:
            return "failed", last[0], last[1]
        return "new", None, None

    def answer(self, k: str, res: LineResult, bkey: str) -> Completion:
        """A succeeded line's completion; its tokens count for this run when this process collected it."""
        paid_now = bkey in self.fresh and k not in self.counted
        if paid_now:
            self.counted.add(k)
            self.stats.prompt_tokens += res.prompt_tokens
            self.stats.completion_tokens += res.completion_tokens
        return res.completion(self.model, cached=not paid_now)

    def wait(self, live: list[dict[str, Any]], requests: int) -> None:
        now = self.clock()
        if now - self.last_line >= self.interval:
            self.last_line = now
            logs.plain_line(self.progress_line(live, requests))
            logs.event("batches", self.progress_line(live, requests), batches=len(live), requests=requests)
        if self.wait_s is not None and now - self.started >= self.wait_s:
            ids = ", ".join(str(r.get("batch_id") or r["key"]) for r in live[:3]) + (" ..." if len(live) > 3 else "")
            hint = ""
            if self.backend == "batch_file" and live:
                hint = f"; run `{self.provider.command(live[0]['batch_id'])}` and copy the output back beside it"
            raise BatchesInFlight(
                f"{len(live)} batch(es) with {requests} request(s) still in flight at {self.backend} ({ids}) after "
                f"{self.wait_s:g}s (--batch-wait, teacher.batch_wait_s); they are journaled in {self.journal.folder}{hint}; rerun "
                "the same command to collect them (`distill batches` lists them)")
        pause = self.poll_s if self.wait_s is None else max(0.0, min(self.poll_s, self.started + self.wait_s - now))
        self.sleep(pause)

    def progress_line(self, live: list[dict[str, Any]], requests: int) -> str:
        states = Counter(str(r.get("status")) for r in live)
        done = sum(int((r.get("counts") or {}).get("completed", 0)) + int((r.get("counts") or {}).get("succeeded", 0))
                   for r in live)
        total = sum(int(r.get("count", 0)) for r in live)
        st = ", ".join(f"{n} {s}" for s, n in states.most_common())
        return (f"[teacher {self.backend}] {len(live)} batch(es) in flight ({st}): {done}/{total} lines done, "
                f"{requests} request(s) of this call waiting, {int(self.clock() - self.started)}s elapsed")
