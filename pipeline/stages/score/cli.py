"""`distill score DATASET`: the stage's spec and its command, a thin shell over `run_score`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ...config import Config, referenced_path
from ...errors import ConfigError
from ...runner import summarize_drops
from ...stage import StageSpec, stage_command
from .config import ScoreConfig
from .decontam import read_eval_items
from .stage import STAGE, run_score


def summary(manifest: dict[str, Any], out: Path) -> str:
    t = manifest.get("totals", {})
    lines = [f"score: {manifest['rows_in']} rows in, {manifest['rows_out']} kept, {manifest['rows_rejected']} dropped -> {out}",
             f"  score source: {manifest.get('score_source')}; scored {int(t.get('scored', 0))}, unscored {int(t.get('unscored', 0))}",
             f"  drops: {summarize_drops(manifest)}"]
    hits = {k: int(v) for k, v in t.items() if k.startswith("contaminated[")}
    if hits:
        lines.append("  decontamination hits: " + ", ".join(f"{k[13:-1]}={v}" for k, v in hits.items()))
    judged = {k: int(v) for k, v in t.items() if k.startswith("judge_")}
    if judged:
        lines.append("  judgments: " + ", ".join(f"{k[6:]}={v}" for k, v in sorted(judged.items())))
    return "\n".join(lines)


def run(input: Path, out: Path, cfg: ScoreConfig, ctx) -> dict[str, Any]:
    return run_score(input, out, cfg, ctx, shard_rows=ctx.shard_rows, limit=ctx.limit)


def check(cfg: Config, section: ScoreConfig, input: Path | None) -> None:
    if section.judge == "deita" or (section.judge == "auto" and section.deita_scorers()):
        for j in section.judges:
            if (section.teacher_for(j) or cfg.teacher).backend == "llamacpp":
                raise ConfigError(
                    f"[score] judge = 'deita': the {j} scorer is read from the first token's logprobs, which the "
                    "embedded llamacpp backend does not return; serve the Deita scorers with vLLM and set "
                    "[score.judge_teacher] backend = 'openai' (README: Scoring with Deita's scorers)")
    for f in section.decontaminate:
        read_eval_items(referenced_path(cfg, STAGE, "decontaminate", f))


SPEC = StageSpec(STAGE, ScoreConfig, run, summary,
                 "hygiene gates, decontamination and quality scores (LIMA / Deita / AlpaGasus)",
                 missing_input="an input dataset: run it after a generation or dedup stage, or pass --input",
                 check=check)

score_cmd = stage_command(
    SPEC, dataset_help="Dataset folder to score (e.g. the semdedup output).",
    help="Gate (LIMA hygiene rules, decontamination) and score every row: quality x complexity by Deita's scorers or a rubric judge, or a documented heuristic.",
    options={
        "judge": (Annotated[Optional[str], typer.Option("--judge", help="'deita': Deita's trained scorers; 'rubric': a zero-shot rubric to a general judge; 'heuristic': length x relevance (not a quality score); 'auto' (default): deita for a Deita scorer judge teacher, rubric for another capable teacher, heuristic for the embedded one.")], None),
        "decontaminate": (Annotated[Optional[list[Path]], typer.Option("--decontaminate", help="Evaluation file (JSON/JSONL/Parquet/text); rows sharing an n-gram with it are dropped. Repeat for several.")], None),
        "decontam_n": (Annotated[Optional[int], typer.Option("--decontam-n", min=3, help="n-gram length in words: 13 (default) or 8.")], None),
    },
    overrides=lambda cfg, decontaminate, **kw: dict(kw, decontaminate=[str(p) for p in decontaminate] if decontaminate else None))
