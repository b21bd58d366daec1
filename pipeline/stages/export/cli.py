"""`distill export DATASET`: the stage's spec and its command, a thin shell over `run_export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ...stage import StageSpec, stage_command
from .config import ExportConfig
from .stage import STAGE, run_export


def _heldout(value: str | None) -> int | float | None:
    if value is None:
        return None
    try:
        return float(value) if "." in value else int(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r}: a row count (500) or a share (0.01)") from None


def summary(m: dict[str, Any], out: Path) -> str:
    splits = ", ".join(f"{k} {v:,}" for k, v in m["splits"].items())
    return f"export: {m['rows']:,} of {m['available_rows']:,} rows ({splits}) in {len(m['files'])} shard(s) -> {out}"


def run(input: Path, out: Path, cfg: ExportConfig, ctx) -> dict[str, Any]:
    return run_export(input, out, cfg, seed=ctx.seed, run_id=ctx.run_id, progress=ctx.progress)


SPEC = StageSpec(STAGE, ExportConfig, run, summary,
                 "write the release: Parquet shards, dataset card, checksummed manifest",
                 missing_input="a dataset: run it after select, or pass --input",
                 local_only="one pass that writes the release folder", release=True)

export_cmd = stage_command(
    SPEC, dataset_help="Dataset folder to release (the select output).",
    help="Write the release: the best N rows as zstd Parquet shards (train-00000-of-000NN.parquet), a dataset card README.md and a checksummed manifest.json.",
    shared=("config", "workdir", "run_id", "seed", "no_progress"),
    options={
        "tier": (Annotated[Optional[str], typer.Option("--tier", help="Release size: 100k, 1m or 10m rows; an error if the input has fewer.")], None),
        "rows": (Annotated[Optional[int], typer.Option("--rows", min=1, help="Release size in rows; an error if the input has fewer (default: all rows).")], None),
        "rows_per_shard": (Annotated[Optional[int], typer.Option("--rows-per-shard", min=1, help="Rows per train-NNNNN-of-NNNNN.parquet shard (default 100000).")], None),
        "heldout": (Annotated[Optional[str], typer.Option("--heldout", help="Held-out 'test' split carved from the release: a count (500) or a share (0.01).")], None),
        "reasoning": (Annotated[Optional[str], typer.Option("--reasoning", help="The teacher's reasoning: field (a `reasoning` column, the default), think_tags (<think>...</think> before the answer in the assistant turn) or answer_only.")], None),
        "format": (Annotated[Optional[str], typer.Option("--format", help="How each example is written: messages (a `messages` chat, the default) or prompt_completion (TRL's conversational `prompt` and `completion` columns: trainers mask the prompt with no chat-template work).")], None),
        "with_logprobs": (Annotated[Optional[bool], typer.Option("--with-logprobs/--no-logprobs", help="Also write the teacher's top-k token logprobs as logprobs-<shard>.parquet next to each shard (rows aligned).")], None),
        "license": (Annotated[Optional[str], typer.Option("--license", help="Licence field of the dataset card, e.g. apache-2.0.")], None),
    },
    overrides=lambda cfg, tier, heldout, **kw: dict(kw, tier=tier.lower() if tier else None, heldout=_heldout(heldout)))
