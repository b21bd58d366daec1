"""`distill config show|init|reference`: see and start the one TOML config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import cli_common as cc
from ..config import ConfigError
from ..configdoc import reference_markdown, resolved_toml, splice_reference, starter_toml
from ..context import load
from ..store import atomic_write_bytes

app = typer.Typer(help="Show the resolved config, write a commented starter file, print the field reference.",
                  no_args_is_help=True)


@app.command("show")
def show(config: cc.ConfigOpt = None) -> None:
    """Print the resolved config (defaults filled in) as TOML."""

    typer.echo(resolved_toml(load(config)), nl=False)


@app.command("init")
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the starter config.")] = Path("distill.toml"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter config listing every field with its default."""

    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; pass --force to overwrite it")
    atomic_write_bytes(path, starter_toml().encode())
    typer.echo(f"wrote {path}")


@app.command("reference")
def reference(
    out: Annotated[Optional[Path], typer.Option("--out", help="Write to this file instead of stdout.")] = None,
    readme: Annotated[Optional[Path], typer.Option("--readme", help="Rewrite the part of this Markdown file between the config-reference markers.")] = None,
) -> None:
    """Print the field-by-field config reference as Markdown (or splice it into the README)."""

    text = reference_markdown()
    if readme:
        if not readme.is_file():
            raise ConfigError(f"{readme}: no such file")
        try:
            new = splice_reference(readme.read_text(encoding="utf-8"), text)
        except ValueError as e:
            raise ConfigError(f"{readme}: {e}") from None
        atomic_write_bytes(readme, new.encode("utf-8"))
        typer.echo(f"updated the config reference in {readme}")
    elif out:
        atomic_write_bytes(out, text.encode("utf-8"))
    else:
        typer.echo(text)
