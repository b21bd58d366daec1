"""`distill semdedup DATASET`: the thin CLI shell over `run_semdedup`, and `distill run`'s step."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ...cli_common import (ConfigOpt, LimitOpt, NoProgressOpt, OutOpt, RunIdOpt, SeedOpt, ShardRowsOpt,
                           WorkdirOpt, load, resolve_run)
from ...config import stage_config
from ...runner import summarize_drops
from .config import SemdedupConfig


def semdedup_cmd(
    dataset: Annotated[Path, typer.Argument(help="Input dataset folder (e.g. the minhash stage's output).")],
    out: OutOpt = None,
    config: ConfigOpt = None,
    workdir: WorkdirOpt = None,
    run_id: RunIdOpt = None,
    limit: LimitOpt = None,
    shard_rows: ShardRowsOpt = None,
    seed: SeedOpt = None,
    no_progress: NoProgressOpt = False,
    fast: Annotated[Optional[bool], typer.Option("--fast/--full", help="Fast static embedder (>= 5k rows/s on a CPU) or the full model (fidelity).")] = None,
    verify: Annotated[Optional[bool], typer.Option("--verify/--no-verify", help="With --fast: re-check candidate pairs with the full model.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="sentence-transformers model: 'minilm' (bundled) or a local folder.")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="cpu, cuda or auto.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Encoder batch size [default: tuned].")] = None,
    threshold: Annotated[Optional[float], typer.Option("--threshold", help="Cosine at or above which rows are duplicates [0.95].")] = None,
    search: Annotated[Optional[str], typer.Option("--search", help="auto, exact, ivf (approximate) or kmeans (SemDeDup).")] = None,
    against: Annotated[Optional[Path], typer.Option("--against", help="Published dataset: also drop rows that duplicate its rows.")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the embedding cache.")] = False,
) -> None:
    """Remove rows that say the same thing in other words (embedding cosine near-duplicates)."""
    cfg = load(config, workdir=workdir, run_id=run_id, limit=limit, shard_rows=shard_rows, seed=seed)
    sd = stage_config(cfg, "semdedup", SemdedupConfig, fast=fast, verify=verify, device=device,
                      batch_size=batch_size, threshold=threshold, search=search,
                      against=str(against) if against else None, cache=False if no_cache else None)
    if model:  # not through stage_config, whose own second parameter is called `model`
        sd.model = model
    paths = resolve_run(cfg, workdir, run_id)
    target = out or paths.stage_dir("semdedup")
    from .api import run_semdedup
    m = run_semdedup(dataset, target, sd, run_id=paths.run_id, workdir=paths.workdir,
                     shard_rows=cfg.run.shard_rows, limit=cfg.run.limit, seed=cfg.run.seed,
                     progress=not no_progress)
    s = m["search"]
    typer.echo(f"semdedup: {m['rows_in']} rows in, {m['rows_out']} kept, {m['rows_rejected']} dropped "
               f"({summarize_drops(m)}); {m['embedder']}, {s['method']} search at cosine >= {s['search_threshold']}, "
               f"{m['embed']['encoded']} rows embedded ({m['embed']['cache_hits']} from cache) -> {target}")


def plan_step(cfg, paths, input, out, ctx) -> dict[str, Any]:
    """`distill run`'s semdedup step: the [semdedup] section over the previous step's folder."""
    from .api import run_semdedup
    sd = stage_config(cfg, "semdedup", SemdedupConfig)
    return run_semdedup(input, out, sd, run_id=paths.run_id, workdir=paths.workdir,
                        shard_rows=cfg.run.shard_rows, limit=cfg.run.limit, seed=cfg.run.seed,
                        progress=ctx.progress)
