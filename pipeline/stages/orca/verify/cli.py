"""`distill orca verify DATASET`: the verify stage's spec and its command, a thin shell over `run_verify`.

Not in the default plan (`distill run`): it is for datasets of checkable tasks, and drops every row that
has no checkable answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ....runner import summarize_drops
from ....stage import StageSpec, stage_command
from .config import VerifyConfig
from .stage import STAGE, run_verify


def summary(m: dict[str, Any], out: Path) -> str:
    t = m.get("totals", {})
    samples = int(t.get("verify.samples", 0))
    rate = t.get("verify.agreeing", 0) / samples if samples else 0.0
    return "\n".join([
        f"verify: {m['rows_in']} rows in, {m['rows_out']} verified traces kept from {samples} samples "
        f"(agreement {rate:.0%}); {int(t.get('verify.rows_kept', 0))} of {int(t.get('verify.rows', 0))} voted rows "
        f"kept a trace -> {out}",
        f"  targets: reference={int(t.get('verify.target.reference', 0))}, "
        f"majority={int(t.get('verify.target.majority', 0))}, none={int(t.get('verify.target.none', 0))}; "
        f"not checkable: {int(t.get('verify.not_checkable', 0))}",
        f"  drops: {summarize_drops(m)}"])


def run(input: Path, out: Path, cfg: VerifyConfig, ctx) -> dict[str, Any]:
    return run_verify(input, out, ctx, cfg, shard_rows=ctx.shard_rows, limit=ctx.limit)


SPEC = StageSpec(STAGE, VerifyConfig, run, summary,
                 "sample n answers per row and keep the traces whose final answer agrees with the reference "
                 "or the majority", needs_teacher=True,
                 missing_input="an input dataset with checkable answers (e.g. `distill import` of labelled math rows)")

verify_cmd = stage_command(
    SPEC, dataset_help="Dataset folder of tasks with a checkable final answer; the reference in `output`.",
    help="Verified traces: sample --samples answers per row, extract each final answer (numbers normalised, a "
         "letter for multiple choice, short text), keep those that agree with the reference (or the majority "
         "without one), record the agreement rate and drop the rest with reasons.",
    options={
        "samples": (Annotated[Optional[int], typer.Option("--samples", "-n", min=1, max=64, help="Answers sampled per row [default: config, 4].")], None),
        "reference": (Annotated[Optional[str], typer.Option("--reference", help="Where the reference is: output (the row's output column) or none (majority vote) [default: config, output].")], None),
        "keep": (Annotated[Optional[str], typer.Option("--keep", help="Agreeing traces kept per row: all or first [default: config, all].")], None),
        "max_tokens": (Annotated[Optional[int], typer.Option("--max-tokens", min=1, help="Completion budget per answer [default: config, 512].")], None),
        "temperature": (Annotated[Optional[float], typer.Option("--temperature", min=0, max=2, help="Sampling temperature [default: config, 0.7].")], None),
    })
