"""`distill teacher ...`: serve the embedded teacher, ping the configured one."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..config import load_config
from ..errors import TeacherUnavailable
from ..lifecycle import started_from_main_thread
from . import make_backend
from .base import ChatRequest, Sampling
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
    """Send one chat request to the configured teacher; print the answer, latency and tokens."""


    cfg = load_config(config, {"teacher": {"backend": backend, "base_url": base_url, "model": model}})
    cfg.teacher.max_retries = min(cfg.teacher.max_retries, 2)  # a ping should fail fast
    t0 = time.monotonic()
    # Never the cache: a ping must reach the teacher.
    teacher = make_backend(cfg.teacher, seed=cfg.run.seed, workdir=Path(cfg.run.workdir))
    try:
        load_s = time.monotonic() - t0
        t1 = time.monotonic()
        [c] = teacher.chat([ChatRequest(messages=[{"role": "user", "content": prompt}],
                                        sampling=Sampling(temperature=0.0, max_tokens=max_tokens),
                                        record_id="ping", purpose="ping")])
        latency = time.monotonic() - t1
    finally:
        teacher.close()
    where = f" at {cfg.teacher.base_url}" if cfg.teacher.backend == "openai" else ""
    if c.error is not None:
        if c.error.kind in ("unavailable", "connection", "timeout"):
            raise TeacherUnavailable(f"{cfg.teacher.backend} teacher{where} did not answer: {c.error.message}")
        typer.secho(f"teacher{where} answered with an error: {c.error.kind}: {c.error.message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    typer.echo(c.text)
    typer.echo(f"backend={teacher.backend} model={c.model or teacher.model}{where} latency={latency:.2f}s "
               f"setup={load_s:.2f}s prompt_tokens={c.usage.prompt_tokens} completion_tokens={c.usage.completion_tokens} "
               f"finish={c.finish_reason}")
