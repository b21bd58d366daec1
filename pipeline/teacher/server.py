"""The embedded teacher's server child, seen from the parent: start, watch, restart, stop.

`EmbeddedServer` runs `python -m pipeline.teacher.embedded_server` on the
bundled SmolLM2 GGUF (or a GGUF path) on a loopback socket that the parent
binds and keeps: the port survives restarts, and requests sent while the child
restarts wait in the backlog. The child dies with its parent
(pipeline.lifecycle) and logs to one file the parent names, which the error
names when the child crashes. `distill teacher serve`, the `llamacpp` backend
(pipeline/teacher/embedded.py) and the test fixtures all start it here.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import TeacherUnavailable
from ..lifecycle import started_from_main_thread
from ..models import smollm2_gguf

MODEL_ALIAS = "smollm2-135m-instruct"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resolve_model(model: str | Path | None) -> tuple[Path, str]:
    """(GGUF path, the name the server answers to): the bundled SmolLM2 unless a GGUF path is given."""
    if model:
        path = Path(model).expanduser()
        if not path.is_file():
            raise TeacherUnavailable(
                f"teacher.model = {str(model)!r} is not a GGUF file; for the llamacpp backend it must be "
                "a path to a .gguf (leave it unset for the bundled SmolLM2-135M)")
        return path, path.name
    try:
        return smollm2_gguf(), MODEL_ALIAS
    except FileNotFoundError as e:
        raise TeacherUnavailable(str(e)) from None


def server_command(model: Path, alias: str, *, n_ctx: int = 2048, n_threads: int | None = None,
                   fd: int | None = None, host: str = "127.0.0.1", port: int = 8765,
                   request_log: Path | None = None, parent_pid: int | None = None,
                   pdeathsig: bool = False, keep_repack: bool = False, logits_all: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "pipeline.teacher.embedded_server", "--model", str(model), "--alias", alias,
           "--n-ctx", str(n_ctx), "--n-threads", str(n_threads or os.cpu_count() or 1)]
    cmd += ["--fd", str(fd)] if fd is not None else ["--host", host, "--port", str(port)]
    if request_log is not None:
        cmd += ["--request-log", str(request_log)]
    if parent_pid is not None:
        cmd += ["--parent-pid", str(parent_pid)]
    if pdeathsig:
        cmd.append("--pdeathsig")
    if keep_repack:
        cmd.append("--keep-repack")
    if logits_all:
        cmd.append("--logits-all")
    return cmd


def describe_exit(returncode: int | None) -> str:
    """'killed by SIGSEGV' / 'exited with code 1' for a Popen returncode."""
    if returncode is None:
        return "is running"
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


class EmbeddedServer:
    """One server child on a loopback socket this object owns."""

    def __init__(self, model: str | Path | None = None, *, n_ctx: int = 2048, n_threads: int | None = None,
                 log: Path | None = None, request_log: Path | None = None, ready_timeout_s: float = 180.0,
                 keep_repack: bool = False, logits_all: bool = False):
        self.logits_all = logits_all  # logprobs answered (serve, fixtures; the llamacpp backend once asked)
        self.keep_repack = keep_repack  # scripts/bench_embedded.py only: the unsafe default of llama.cpp
        self.model_path, self.alias = resolve_model(model)
        self.n_ctx, self.n_threads = n_ctx, n_threads
        self.request_log = request_log
        self.ready_timeout_s = ready_timeout_s
        self.temp_log = log is None  # removed on a clean close; kept after any crash or failed start
        self.failed = False
        if log is None:
            fd, name = tempfile.mkstemp(prefix="distill-teacher-", suffix=".log")
            os.close(fd)
            log = Path(name)
        self.log = Path(log)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def __repr__(self) -> str:
        return f"EmbeddedServer({self.base_url}, pid={self.pid}, log={str(self.log)!r})"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> "EmbeddedServer":
        fd = self.sock.fileno()
        pdeathsig = started_from_main_thread()
        cmd = server_command(self.model_path, self.alias, n_ctx=self.n_ctx, n_threads=self.n_threads, fd=fd,
                             request_log=self.request_log, parent_pid=os.getpid(), pdeathsig=pdeathsig,
                             keep_repack=self.keep_repack, logits_all=self.logits_all)
        with open(self.log, "ab") as out:
            out.write(f"--- start {self.starts + 1} at {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                      f"{' '.join(cmd)}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         pass_fds=(fd,), env=dict(os.environ, HF_HUB_OFFLINE="1"))
        self.starts += 1
        self.wait_ready()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_description(self) -> str:
        return describe_exit(self.proc.poll() if self.proc is not None else None)

    def wait_ready(self) -> None:
        """Poll GET /models until the child answers; TeacherUnavailable when it dies or stalls."""
        deadline = time.monotonic() + self.ready_timeout_s
        last = ""
        while time.monotonic() < deadline:
            if not self.alive():
                self.failed = True
                raise TeacherUnavailable(
                    f"the embedded teacher server {self.exit_description()} while loading the model; "
                    f"see {self.log} (or run `distill doctor`)")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as r:
                    json.loads(r.read())
                    return
            except (urllib.error.URLError, ConnectionError, OSError, ValueError) as e:
                last = str(e)
            time.sleep(0.2)
        self.failed = True
        self.kill()
        raise TeacherUnavailable(f"the embedded teacher server was not ready after {self.ready_timeout_s:.0f}s "
                                 f"({last}); see {self.log}")

    def restart(self) -> None:
        self.kill()
        self.start()

    def kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.proc = proc  # keep the returncode readable

    def close(self) -> None:
        crashed = self.failed or self.starts > 1 or (self.proc is not None and self.proc.poll() not in (None, 0))
        self.kill()
        self.sock.close()
        if self.temp_log and not crashed:
            self.log.unlink(missing_ok=True)

    def __enter__(self) -> "EmbeddedServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def start_server(*, log: Path | None = None, n_ctx: int = 2048, n_threads: int | None = None,
                 timeout_s: float = 180.0, request_log: Path | None = None,
                 logits_all: bool = True) -> EmbeddedServer:
    """Start an embedded server child that answers like `distill teacher serve` (logprobs
    included) and is ready to answer; `.base_url`, `.close()`."""
    return EmbeddedServer(n_ctx=n_ctx, n_threads=n_threads, log=log, request_log=request_log,
                          ready_timeout_s=timeout_s, logits_all=logits_all).start()
