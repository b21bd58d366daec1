"""`distill import` and `distill inspect`: get data in, look at what a stage wrote."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .. import cli_common as cc
from ..context import load, resolve_run
from ..importer import import_file
from ..inspection import describe
from ..stages.evol_instruct.lineage import format_chain
from ..stages.hard.report import format_summary as format_hard
from ..store import check_out, clear_out, folder_lock, input_inside


def import_cmd(
    file: Annotated[Path, typer.Argument(help="JSON, JSONL (Alpaca, Self-Instruct seeds, plain or chat rows) or Parquet file.")],
    out: cc.OutOpt = None,
    config: cc.ConfigOpt = None,
    workdir: cc.WorkdirOpt = None,
    run_id: cc.RunIdOpt = None,
    limit: cc.LimitOpt = None,
    shard_rows: cc.ShardRowsOpt = None,
    overwrite: cc.OverwriteOpt = False,
) -> None:
    """Import a file as a dataset; bad rows go to rejected/ with their line number and reason."""

    cfg = load(config, workdir=workdir, run_id=run_id, limit=limit, shard_rows=shard_rows)
    paths = resolve_run(cfg, workdir, run_id)
    dest = out or paths.stage_dir("import")
    input_inside(file, dest)  # before anything is touched: importing a folder's own shard into it
    if not overwrite:
        check_out(dest, "import")  # before the lock: a refusal leaves no trace
    with folder_lock(dest):
        if overwrite and (kept := clear_out(dest)) is not None:
            typer.echo(f"--overwrite: the old contents of {dest} are kept in {kept}", err=True)
        m = import_file(file, dest, run_id=paths.run_id, shard_rows=cfg.run.shard_rows * 10, limit=cfg.run.limit)
    typer.echo(f"imported {m['rows_out']} rows into {dest} ({m['rows_rejected']} rejected"
               + (f": {', '.join(f'{k}={v}' for k, v in m['drops'].items())}" if m["drops"] else "") + ")")


def inspect_cmd(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder written by any stage.")],
    rows: Annotated[int, typer.Option("--rows", "-n", min=0, help="Sample rows to print.")] = 3,
    rejected: Annotated[bool, typer.Option("--rejected", help="Sample the rejected rows instead of the kept ones.")] = False,
    schema: Annotated[bool, typer.Option("--schema", help="Print the columns and what each one means.")] = False,
    chain: Annotated[Optional[str], typer.Option("--chain", help="Print the evolution chain (root to this row) of a row id.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Print a dataset's row count, schema, drop reasons and sample rows."""
    info = describe(dataset, sample=rows, rejected=rejected, chain=chain)
    if as_json:
        typer.echo(json.dumps(info, indent=2, default=str, ensure_ascii=False))
        return
    _print_human(info, schema)


def _short(value: Any, width: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    text = text.replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 1] + "…"


def _print_human(info: dict[str, Any], schema: bool) -> None:
    echo = typer.echo
    echo(f"dataset   {info['path']}")
    echo(f"stage     {info.get('stage') or '?'}   complete: {'yes' if info['complete'] else 'no (no manifest yet)'}")
    echo(f"rows      {info['rows']:,} in {info['shards']} shard(s); rejected: {info['rejected_rows']:,}")
    echo(f"health    ok: every row group of {info['shards_verified']} shard(s) (kept and rejected) decoded")
    if info.get("unmarked_shards"):
        echo(f"ignored   {len(info['unmarked_shards'])} shard(s) without a done marker (not data): "
             + ", ".join(info["unmarked_shards"][:3]))
    if info["drops"]:
        echo("drops by reason:")
        for reason, n in info["drops"].items():
            echo(f"  {n:>8,}  {reason}")
    if schema:
        echo("schema:")
        for name, typ, doc in info["schema"]:
            echo(f"  {name:<20} {typ:<40} {doc}")
    if info.get("rounds"):
        echo("rows by evolution round and origin:")
        for rnd, origins in info["rounds"].items():
            echo(f"  round {rnd}: " + ", ".join(f"{o}={n:,}" for o, n in sorted(origins.items())))
    if info.get("hard"):
        echo(format_hard(info["hard"]))
    if info.get("chain"):
        echo("evolution chain, root first" + ("" if info.get("chain_of") == "asked"
                                             else " (a row of the deepest round; any row's: --chain ID)") + ":")
        echo(textwrap.indent(format_chain(info["chain"], width=160), "  "))
    if info.get("sample"):
        echo("sample rows:")
        for r in info["sample"]:
            echo("  ---")
            for k, v in r.items():
                if v not in (None, "", []):
                    echo(f"  {k:<17} {_short(v)}")
