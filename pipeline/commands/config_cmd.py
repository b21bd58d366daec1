"""`distill config show|init|reference`: see and start the one TOML config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import cli_common as cc

app = typer.Typer(help="Show the resolved config, write a commented starter file, print the field reference.",
                  no_args_is_help=True)


@app.command("show")
def show(config: cc.ConfigOpt = None) -> None:
    """Print the resolved config (defaults filled in) as TOML."""
    from ..configdoc import resolved_toml

    typer.echo(resolved_toml(cc.load(config)), nl=False)


@app.command("init")
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the starter config.")] = Path("distill.toml"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter config listing every field with its default."""
    from ..configdoc import starter_toml
    from ..config import ConfigError
    from ..store import atomic_write_bytes

    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; pass --force to overwrite it")
    atomic_write_bytes(path, starter_toml().encode())
    typer.echo(f"wrote {path}")


@app.command("reference")
def reference(out: Annotated[Optional[Path], typer.Option("--out", help="Write to this file instead of stdout.")] = None) -> None:
    """Print the field-by-field config reference as Markdown."""
    from ..configdoc import reference_markdown

    text = reference_markdown()
    if out:
        out.write_text(text)
    else:
        typer.echo(text)
