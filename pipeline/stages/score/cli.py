"""`distill score DATASET`: a thin shell over `run_score`, and the step `distill run` chains."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ...cli_common import (ConfigOpt, ExecutorOpt, LimitOpt, NoProgressOpt, OutOpt, RayAddressOpt, RunIdOpt, SeedOpt,
                           ShardRowsOpt, WorkdirOpt, load, make_context, resolve_run)
from ...config import Config, stage_config
from ...errors import InputFileError
from ...runner import StageContext, summarize_drops
from .config import ScoreConfig
from .stage import STAGE, run_score


def score_cmd(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder to score (e.g. the semdedup output).")],
    out: OutOpt = None,
    judge: Annotated[Optional[str], typer.Option("--judge", help="'teacher': the (judge) teacher rates quality/complexity/accuracy; 'none': length heuristic (default: config, none).")] = None,
    decontaminate: Annotated[Optional[list[Path]], typer.Option("--decontaminate", help="Evaluation file (JSON/JSONL/Parquet/text); rows sharing an n-gram with it are dropped. Repeat for several.")] = None,
    decontam_n: Annotated[Optional[int], typer.Option("--decontam-n", min=3, help="n-gram length in words: 13 (default) or 8.")] = None,
    config: ConfigOpt = None,
    workdir: WorkdirOpt = None,
    run_id: RunIdOpt = None,
    limit: LimitOpt = None,
    shard_rows: ShardRowsOpt = None,
    seed: SeedOpt = None,
    executor: ExecutorOpt = None,
    ray_address: RayAddressOpt = None,
    no_progress: NoProgressOpt = False,
) -> None:
    """Gate (LIMA hygiene rules, decontamination) and score every row: teacher-judged quality x complexity, or a documented heuristic."""
    cfg = load(config, workdir=workdir, run_id=run_id, limit=limit, shard_rows=shard_rows, seed=seed,
               executor=executor, ray_address=ray_address)
    scfg = stage_config(cfg, STAGE, ScoreConfig, judge=judge, decontam_n=decontam_n,
                        decontaminate=[str(p) for p in decontaminate] if decontaminate else None)
    paths = resolve_run(cfg, workdir, run_id)
    target = out or paths.stage_dir(STAGE)
    ctx = make_context(cfg, paths, progress=not no_progress)
    try:
        manifest = run_score(dataset, target, scfg, ctx, shard_rows=cfg.run.shard_rows, limit=cfg.run.limit)
    finally:
        ctx.close()
    typer.echo(summary(manifest, target))


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


def plan_step(cfg: Config, paths: Any, input: Path | None, out: Path, ctx: StageContext) -> dict[str, Any]:
    """The `distill run` step: score the previous step's output."""
    if input is None:
        raise InputFileError("score needs an input dataset: run it after a generation or dedup stage, or pass --input")
    scfg = stage_config(cfg, STAGE, ScoreConfig)
    return run_score(input, out, scfg, ctx, shard_rows=cfg.run.shard_rows, limit=cfg.run.limit)
