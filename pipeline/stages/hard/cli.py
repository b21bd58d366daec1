"""`distill hard DATASET`: the stage's spec and its command, a thin shell over `run_hard`.

The referee is [hard.judge_teacher] when set, else [score.judge_teacher] (`inherited` hands it over, for
the command and for `distill run`), else the run's [teacher]. `distill run` runs the stage only when
[hard] enabled = true (StageSpec.optional).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ...config import Config
from ...runner import summarize_drops
from ...stage import StageSpec, stage_command
from .config import HardConfig
from .stage import STAGE, run_hard


def inherited(cfg: Config) -> dict[str, Any]:
    """What [hard] takes from other sections when it does not set it: the score stage's judge teacher."""
    if "judge_teacher" not in cfg.hard and cfg.score.get("judge_teacher"):
        return {"judge_teacher": cfg.score["judge_teacher"]}
    return {}


def summary(manifest: dict[str, Any], out: Path) -> str:
    t = manifest.get("totals", {})
    judged, hard = int(t.get("judged", 0)), int(t.get("hard", 0))
    share = f" ({100 * hard / judged:.0f}%)" if judged else ""
    new = {k.split("_", 1)[1]: int(v) for k, v in t.items() if k in ("generated_hard", "generated_easy")}
    return "\n".join([
        f"hard: {manifest['rows_in']} rows in, {manifest['rows_out']} out, {manifest['rows_rejected']} "
        f"new instructions dropped -> {out}",
        f"  judged {judged}: {hard} hard{share}, {int(t.get('easy', 0))} easy; "
        f"{int(t.get('referee_unparseable', 0))} rows with no score (unparseable), {int(t.get('no_answer', 0))} rows without an answer",
        f"  new instructions: {new.get('hard', 0)} after hard rows, {new.get('easy', 0)} after easy rows",
        *_none_hard(manifest, judged, hard),
        f"  drops: {summarize_drops(manifest)}"])


def _none_hard(manifest: dict[str, Any], judged: int, hard: int) -> list[str]:
    """Why nothing was generated when every judged row fell under the threshold (a weak referee's gaps
    sit near 0: the embedded SmolLM2's within +-0.2 of Lion's 1-10 scale)."""
    threshold = manifest.get("settings", {}).get("threshold")
    if not judged or hard or threshold is None:
        return []
    return [f"  no row reached [hard] threshold = {threshold:g}, so nothing was generated (Lion generates after "
            "hard rows, and as many after easy ones); `distill inspect` shows the gaps, and --threshold lowers it"]


def run(input: Path, out: Path, cfg: HardConfig, ctx) -> dict[str, Any]:
    return run_hard(input, out, cfg, ctx, shard_rows=ctx.shard_rows, limit=ctx.limit)


SPEC = StageSpec(STAGE, HardConfig, run, summary,
                 "hard examples: the student answers, a referee compares it with the teacher, the teacher writes "
                 "new instructions after the hard ones (Lion)", needs_teacher=True,
                 missing_input="an input dataset with answers: run it after evol_instruct, or pass --input",
                 optional=True, inherits=inherited)

hard_cmd = stage_command(
    SPEC, dataset_help="Dataset folder whose rows carry the teacher's answers (e.g. the evol_instruct output, "
                       "or `distill import` of a JSON file).",
    help="Find the instructions the student answers worse than the teacher (a referee scores both answers in "
         "both orders) and have the teacher write new ones like them, plus some like the easy ones (Lion).",
    options={
        "rounds": (Annotated[Optional[int], typer.Option("--rounds", min=1, max=10, help="Discrimination + generation rounds against the same student [default: config, 1].")], None),
        "threshold": (Annotated[Optional[float], typer.Option("--threshold", min=0, max=9, help="A row is hard when the teacher's score beats the student's by at least this (1-10 scale) [default: config, 1.0].")], None),
    },
    overrides=lambda cfg, **kw: dict(kw, **inherited(cfg)))
