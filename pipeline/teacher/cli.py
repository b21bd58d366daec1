"""`distill teacher ...`: serve the embedded teacher, ping the configured one."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..config import load_config
from ..lifecycle import started_from_main_thread
from . import make_backend
from .ping import ask, probe_section, where
from .server import resolve_model, server_command

app = typer.Typer(help="Serve the embedded teacher or check the configured one.", no_args_is_help=True)


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8765,
    model: Annotated[Optional[Path], typer.Option(help="A GGUF file [default: the bundled SmolLM2-135M-Instruct].")] = None,
    n_ctx: Annotated[int, typer.Option(help="Context size in tokens.")] = 2048,
    n_threads: Annotated[int | None, typer.Option(help="CPU threads [default: all cores].")] = None,
) -> None:
    """Serve the embedded SmolLM2 teacher as an OpenAI-compatible server (foreground, Ctrl-C stops)."""


    path, alias = resolve_model(model)
    typer.echo(f"serving {alias} at http://{host}:{port}/v1 (Ctrl-C to stop)", err=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    cmd = server_command(path, alias, n_ctx=n_ctx, n_threads=n_threads, host=host, port=port,
                         parent_pid=os.getpid(), pdeathsig=started_from_main_thread(), logits_all=True)
    raise typer.Exit(subprocess.call(cmd, env=env))


@app.command("ping")
def ping(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML config file; its [teacher] section is used.")] = None,
    backend: Annotated[Optional[str], typer.Option(help="Override teacher.backend: llamacpp, openai or vllm.")] = None,
    base_url: Annotated[Optional[str], typer.Option("--base-url", help="Override teacher.base_url (openai backend).")] = None,
    model: Annotated[Optional[str], typer.Option(help="Override teacher.model.")] = None,
    prompt: Annotated[str, typer.Option(help="The user message to send.")] = "Say hello in one short sentence.",
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Answer length limit in tokens.")] = 32,
) -> None:
    """Send one chat request to the configured teacher; print the answer, latency and tokens (exit 4 if it fails)."""


    cfg = load_config(config, {"teacher": {"backend": backend, "base_url": base_url, "model": model}})
    t0 = time.monotonic()
    # The same ping every teacher-using command sends first (teacher/ping.py): a short-lived client with
    # few retries and a short timeout, never the cache. Any failed answer is exit 4, in one line.
    section = probe_section(cfg.teacher)
    teacher = make_backend(section, seed=cfg.run.seed, workdir=Path(cfg.run.workdir))
    try:
        load_s = time.monotonic() - t0
        t1 = time.monotonic()
        c = ask(teacher, cfg.teacher, max_tokens=max_tokens, prompt=prompt)
        latency = time.monotonic() - t1
    finally:
        teacher.close()
    typer.echo(c.text)
    typer.echo(f"backend={teacher.backend} model={c.model or teacher.model}{where(cfg.teacher)} "
               f"latency={latency:.2f}s setup={load_s:.2f}s prompt_tokens={c.usage.prompt_tokens} "
               f"completion_tokens={c.usage.completion_tokens} finish={c.finish_reason}")
