"""`distill evol-instruct DATASET`: the stage's spec and its command, a thin shell over `run_evol_instruct`.

Reads the dataset given as the positional argument (or, in `distill run`, the
previous step's folder); writes `--out` (default `<workdir>/<run-id>/evol_instruct`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ...runner import summarize_drops
from ...stage import StageSpec, stage_command
from .config import EvolConfig
from .stage import run_evol_instruct

SECTION = "evol_instruct"


def summary(manifest: dict[str, Any], out: Path) -> str:
    lines = [f"evol-instruct: {manifest['rows_in']} input rows, {manifest['evolutions_accepted']} evolutions "
             f"accepted over {manifest['rounds_done']}/{manifest['rounds']} complete rounds -> {out}"]
    for r in manifest.get("per_round", []):
        lines.append(f"  round {r['round']}: {r.get('evolved', 0)} of {r.get('rows_in', 0)} evolved"
                     f"{'' if r['complete'] else ' (partial)'}")
    lines.append(f"  drops: {summarize_drops(manifest)}")
    if manifest.get("teacher_calls_per_accepted") is not None:
        lines.append(f"  teacher calls per accepted evolution: {manifest['teacher_calls_per_accepted']}")
    if manifest.get("stopped_by"):
        lines.append(f"  stopped by the {manifest['stopped_by']} budget; raise it and rerun to continue")
    return "\n".join(lines)


def run(input: Path, out: Path, cfg: EvolConfig, ctx) -> dict[str, Any]:
    return run_evol_instruct(input, out, ctx, cfg, shard_rows=ctx.shard_rows, limit=ctx.limit)


SPEC = StageSpec(SECTION, EvolConfig, run, summary,
                 "evolve the instructions into harder and rarer ones (Evol-Instruct)", needs_teacher=True,
                 missing_input="an input dataset: run it after self_instruct or import one")

evol_instruct_cmd = stage_command(
    SPEC, dataset_help="Instruction dataset folder (e.g. the self_instruct output, or `distill import` of a JSON file).",
    help="""Evolve instructions into harder and rarer ones (Evol-Instruct): rounds of rewrites, each answered by the teacher, failures eliminated with a reason, lineage on every row.

    With --executor ray each round's shards run as Ray tasks (rounds stay in order); --max-rows and --max-tokens-total need the local executor.""",
    options={
        "rounds": (Annotated[Optional[int], typer.Option("--rounds", min=1, help="Evolution rounds M (default: the config's, else 4).")], None),
        "max_rows": (Annotated[Optional[int], typer.Option("--max-rows", min=1, help="Stop after this many accepted evolutions.")], None),
        "max_tokens_total": (Annotated[Optional[int], typer.Option("--max-tokens-total", min=1, help="Stop once the teacher has spent this many tokens.")], None),
        "logprobs": (Annotated[Optional[int], typer.Option("--logprobs", min=1, max=20, help="Keep the top-K token logprobs of each answer in meta.evol_instruct.logprobs (backends that return them).")], None),
    })
