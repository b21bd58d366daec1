"""`distill semdedup DATASET`: the thin CLI shell over `run_semdedup`, and `distill run`'s step."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ...cli_common import (ConfigOpt, ExecutorOpt, LimitOpt, NoProgressOpt, OutOpt, RayAddressOpt, RunIdOpt,
                           SeedOpt, ShardRowsOpt, WorkdirOpt, load, resolve_run)
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
    executor: ExecutorOpt = None,
    ray_address: RayAddressOpt = None,
    no_progress: NoProgressOpt = False,
    fast: Annotated[Optional[bool], typer.Option("--fast/--full", help="Fast static embedder distilled from the model (300x+ the rows/s on a CPU; finds ~93% of the full model's pairs) or the full model (fidelity) [default: full].")] = None,
    verify: Annotated[Optional[bool], typer.Option("--verify/--no-verify", help="With --fast: wider candidate cut, each pair re-checked by the full model (~99% of its pairs, none it rejects).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="sentence-transformers model: 'minilm' (bundled) or a local folder.")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="Where the full model runs: cpu, cuda or auto [default: auto].")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Encoder batch size [default: tuned].")] = None,
    threshold: Annotated[Optional[float], typer.Option("--threshold", help="Cosine at or above which rows are duplicates [0.95].")] = None,
    search: Annotated[Optional[str], typer.Option("--search", help="auto, exact, ivf (approximate) or kmeans (SemDeDup).")] = None,
    against: Annotated[Optional[Path], typer.Option("--against", help="Published dataset: also drop rows that duplicate its rows.")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the embedding cache.")] = False,
) -> None:
    """Remove rows that say the same thing in other words (embedding cosine near-duplicates)."""
    cfg = load(config, workdir=workdir, run_id=run_id, limit=limit, shard_rows=shard_rows, seed=seed,
               executor=executor, ray_address=ray_address)
    sd = stage_config(cfg, "semdedup", SemdedupConfig, fast=fast, verify=verify, device=device,
                      batch_size=batch_size, threshold=threshold, search=search,
                      against=str(against) if against else None, cache=False if no_cache else None)
    if model:  # not through stage_config, whose own second parameter is called `model`
        sd.model = model
    if cfg.run.executor == "ray":
        from ...executors.ray_runtime import require_ray
        require_ray()  # the install hint before any work
    paths = resolve_run(cfg, workdir, run_id)
    target = out or paths.stage_dir("semdedup")
    from .api import run_semdedup
    m = run_semdedup(dataset, target, sd, run_id=paths.run_id, workdir=paths.workdir,
                     shard_rows=cfg.run.shard_rows, limit=cfg.run.limit, seed=cfg.run.seed,
                     progress=not no_progress, executor=cfg.run.executor, ray_address=cfg.run.ray_address,
                     notify=lambda line: typer.echo(line, err=True))
    typer.echo(summary(m, target))


def summary(m: dict[str, Any], target: Path) -> str:
    """The command's closing lines: counts, how rows were compared, where to look at the drops."""
    s, e, c = m["search"], m["embed"], m["clusters"]
    if e.get("executor") == "ray":
        embedded = f"{e['rows_sent_to_actors']} rows embedded on Ray"
    else:
        embedded = f"{e['encoded']} rows embedded, {e['cache_hits']} from the cache"
    if e.get("shards_resumed"):
        embedded += f", {e['shards_resumed']} shards resumed"
    how = f"{s['method']} search at cosine >= {s['search_threshold']}"
    if "verified_pairs" in s:
        how += f", {s['verify_candidates']} candidate pairs re-checked by {s['verifier']}: {s['verified_pairs']} at >= {m['settings']['threshold']}"
    if "recall_vs_exact_sampled" in s:
        how += f", recall vs exact ~{s['recall_vs_exact_sampled']['recall']} (sampled)"
    lines = [f"semdedup: {m['rows_in']} rows in, {m['rows_out']} kept, {m['rows_rejected']} dropped ({summarize_drops(m)}) -> {target}",
             f"  {m['embedder']}: {embedded}; {how}",
             f"  {m['pairs']} near-duplicate pairs in {c['with_duplicates']} clusters (largest {c['largest']} rows)"]
    if m.get("against"):
        a = m["against"]
        lines.append(f"  against {a['path']} ({a['rows']} rows, {'stored embeddings' if a['stored_embeddings'] else 'embedded now'}): {a['dropped']} dropped")
    if m["rows_rejected"]:
        lines.append(f"  what was dropped and why: distill inspect {target} --rejected")
    return "\n".join(lines)


def plan_step(cfg, paths, input, out, ctx) -> dict[str, Any]:
    """`distill run`'s semdedup step: the [semdedup] section over the previous step's folder."""
    from .api import run_semdedup
    sd = stage_config(cfg, "semdedup", SemdedupConfig)
    return run_semdedup(input, out, sd, run_id=paths.run_id, workdir=paths.workdir,
                        shard_rows=cfg.run.shard_rows, limit=cfg.run.limit, seed=cfg.run.seed,
                        progress=ctx.progress, executor=ctx.executor, ray_address=ctx.ray_address)
