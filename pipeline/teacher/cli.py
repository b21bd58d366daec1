"""`distill teacher ...`: serve the embedded teacher, ping the configured one."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(help="Serve the embedded teacher or check the configured one.", no_args_is_help=True)


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8765,
    n_ctx: Annotated[int, typer.Option(help="Context size in tokens.")] = 2048,
    n_threads: Annotated[int | None, typer.Option(help="CPU threads [default: all cores].")] = None,
) -> None:
    """Serve the embedded SmolLM2 teacher as an OpenAI-compatible server (foreground, Ctrl-C stops)."""
    import os
    import subprocess

    from .server import MODEL_ALIAS, server_command

    typer.echo(f"serving {MODEL_ALIAS} at http://{host}:{port}/v1 (Ctrl-C to stop)", err=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    raise typer.Exit(subprocess.call(server_command(host, port, n_ctx=n_ctx, n_threads=n_threads), env=env))
