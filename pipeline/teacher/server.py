"""The embedded teacher as an OpenAI-compatible server on loopback.

`distill teacher serve` and the test fixtures start llama-cpp-python's own
server (`python -m llama_cpp.server`) on the bundled SmolLM2 GGUF, so the
`openai` backend is exercised over real HTTP with no GPU and no network.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..models import smollm2_gguf

MODEL_ALIAS = "smollm2-135m-instruct"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(host: str, port: int, model: Path | None = None, n_ctx: int = 2048,
                   n_threads: int | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "llama_cpp.server",
           "--model", str(model or smollm2_gguf()),
           "--model_alias", MODEL_ALIAS,
           "--host", host, "--port", str(port), "--n_ctx", str(n_ctx)]
    if n_threads:
        cmd += ["--n_threads", str(n_threads)]
    return cmd


def wait_ready(base_url: str, timeout_s: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    """Poll GET {base_url}/models until the server answers (or the process dies)."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"embedded teacher server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=2) as r:
                json.loads(r.read())
                return
        except (urllib.error.URLError, ConnectionError, OSError, ValueError) as e:
            last = str(e)
        time.sleep(0.3)
    raise TimeoutError(f"embedded teacher server at {base_url} not ready after {timeout_s:.0f}s ({last})")


def start_server(port: int | None = None, host: str = "127.0.0.1", *, log: Path | None = None,
                 n_ctx: int = 2048, n_threads: int | None = None,
                 timeout_s: float = 120.0) -> tuple[subprocess.Popen, str]:
    """Start the embedded server in the background; returns (process, base_url)."""
    port = port or free_port()
    out = open(log, "ab") if log else subprocess.DEVNULL
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(server_command(host, port, n_ctx=n_ctx, n_threads=n_threads),
                            stdout=out, stderr=subprocess.STDOUT, env=env)
    base_url = f"http://{host}:{port}/v1"
    try:
        wait_ready(base_url, timeout_s, proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, base_url


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
