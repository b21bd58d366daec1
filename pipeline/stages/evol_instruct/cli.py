"""`distill evol-instruct DATASET`: a thin shell over `run_evol_instruct`, and the step `distill run` chains.

Reads the dataset given as the positional argument (or, in `distill run`, the
previous step's folder); writes `--out` (default `<workdir>/<run-id>/evol_instruct`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ...cli_common import (ConfigOpt, ExecutorOpt, LimitOpt, NoProgressOpt, OutOpt, RayAddressOpt, RunIdOpt,
                           SeedOpt, ShardRowsOpt, WorkdirOpt, load, make_context, resolve_run)
from ...config import Config, stage_config
from ...errors import InputFileError
from ...runner import StageContext, summarize_drops
from .config import EvolConfig
from .stage import run_evol_instruct

SECTION = "evol_instruct"


def evol_instruct_cmd(
    dataset: Annotated[Path, typer.Argument(help="Instruction dataset folder (e.g. the self_instruct output, or `distill import` of a JSON file).")],
    out: OutOpt = None,
    rounds: Annotated[Optional[int], typer.Option("--rounds", min=1, help="Evolution rounds M (default: the config's, else 4).")] = None,
    max_rows: Annotated[Optional[int], typer.Option("--max-rows", min=1, help="Stop after this many accepted evolutions.")] = None,
    max_tokens_total: Annotated[Optional[int], typer.Option("--max-tokens-total", min=1, help="Stop once the teacher has spent this many tokens.")] = None,
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
    """Evolve instructions into harder and rarer ones (Evol-Instruct): rounds of rewrites, each answered by the teacher, failures eliminated with a reason, lineage on every row.

    With --executor ray each round's shards run as Ray tasks (rounds stay in order); --max-rows and --max-tokens-total need the local executor."""
    cfg = load(config, workdir=workdir, run_id=run_id, limit=limit, shard_rows=shard_rows, seed=seed,
               executor=executor, ray_address=ray_address)
    ecfg = stage_config(cfg, SECTION, EvolConfig, rounds=rounds, max_rows=max_rows,
                        max_tokens_total=max_tokens_total)
    paths = resolve_run(cfg, workdir, run_id)
    target = out or paths.stage_dir(SECTION)
    ctx = make_context(cfg, paths, progress=not no_progress)
    try:
        manifest = run_evol_instruct(dataset, target, ctx, ecfg, shard_rows=cfg.run.shard_rows,
                                     limit=cfg.run.limit)
    finally:
        ctx.close()
    typer.echo(summary(manifest, target))


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


def plan_step(cfg: Config, paths: Any, input: Path | None, out: Path, ctx: StageContext) -> dict[str, Any]:
    """The `distill run` step: evolve the previous step's output."""
    if input is None:
        raise InputFileError("evol_instruct needs an input dataset: run it after self_instruct or import one")
    ecfg = stage_config(cfg, SECTION, EvolConfig)
    return run_evol_instruct(input, out, ctx, ecfg, shard_rows=cfg.run.shard_rows, limit=cfg.run.limit)
