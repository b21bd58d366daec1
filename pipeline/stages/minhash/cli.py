"""`distill minhash DATASET`: a thin shell over `run_minhash`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.cli_common import (ConfigOpt, ExecutorOpt, LimitOpt, NoProgressOpt, OutOpt, RayAddressOpt, RunIdOpt,
                                 SeedOpt, ShardRowsOpt, WorkdirOpt, load, resolve_run)
from pipeline.config import stage_config

from .config import MinhashConfig


def minhash_cmd(
    dataset: Annotated[Path, typer.Argument(help="Input dataset folder (e.g. the orca output, or an imported file's folder).")],
    out: OutOpt = None,
    config: ConfigOpt = None,
    workdir: WorkdirOpt = None,
    run_id: RunIdOpt = None,
    limit: LimitOpt = None,
    shard_rows: ShardRowsOpt = None,
    seed: SeedOpt = None,
    threshold: Annotated[Optional[float], typer.Option(help="Jaccard similarity at or above which a row is a near-duplicate (default 0.7).")] = None,
    recall: Annotated[Optional[float], typer.Option("--recall", help="Least candidate probability at the threshold; bands are chosen from it (default 0.95).")] = None,
    num_perm: Annotated[Optional[int], typer.Option(help="MinHash permutations (default 128).")] = None,
    ngram: Annotated[Optional[int], typer.Option(help="Shingle size (default 5).")] = None,
    unit: Annotated[Optional[str], typer.Option(help="Shingle unit: word, or char for CJK (default word).")] = None,
    hash: Annotated[Optional[str], typer.Option("--hash", help="fast, or datasketch (sha1, bit-identical to datasketch) (default fast).")] = None,
    verify: Annotated[Optional[str], typer.Option(help="exact (shingle Jaccard) or estimate (signature) (default exact).")] = None,
    cluster: Annotated[Optional[str], typer.Option(help="leader (remove only verified duplicates of a kept row) or component (default leader).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Worker processes (default 2); with --executor ray, tasks in flight (default: every CPU of the cluster).")] = None,
    against: Annotated[Optional[list[Path]], typer.Option("--against", help="Published dataset with stored signatures to dedup against (repeatable).")] = None,
    add_to_against: Annotated[bool, typer.Option("--add-to-against", help="Register this output's signatures with the first --against dataset.")] = False,
    keep_work: Annotated[bool, typer.Option("--keep-work", help="Keep the phase files (_work/) after finishing.")] = False,
    executor: ExecutorOpt = None,
    ray_address: RayAddressOpt = None,
    no_progress: NoProgressOpt = False,
) -> None:
    """Remove near-duplicate rows (MinHash LSH, verified): kept rows, rejected/ with the duplicated row's id, clusters.parquet."""
    cfg = load(config, workdir=workdir, run_id=run_id, limit=limit, seed=seed, executor=executor,
               ray_address=ray_address)
    if cfg.run.executor == "ray":
        from pipeline.executors.ray_runtime import require_ray
        require_ray()  # the one-line install hint before any work
    overrides = dict(threshold=threshold, recall_at_threshold=recall, num_perm=num_perm, ngram=ngram, unit=unit,
                     hash=hash, verify=verify, cluster=cluster, workers=workers, shard_rows=shard_rows,
                     against=[str(p) for p in against] if against else None,
                     add_to_against=add_to_against or None, keep_work=keep_work or None)
    mc = stage_config(cfg, "minhash", MinhashConfig, **overrides)
    paths = resolve_run(cfg, workdir, run_id)
    out = out or paths.stage_dir("minhash")
    from . import run
    m = run(dataset, out, mc, executor=cfg.run.executor, ray_address=cfg.run.ray_address, ray_workers=workers,
            limit=cfg.run.limit, run_id=paths.run_id, progress=not no_progress, echo=lambda s: typer.echo(s, err=True))
    typer.echo(f"{out}: {m['rows_in']} rows in, {m['rows_out']} kept, {m['rows_rejected']} near-duplicates removed "
               f"({m['candidate_pairs']} candidate pairs, {m['verified_pairs']} verified); clusters in {out / 'clusters.parquet'}")


