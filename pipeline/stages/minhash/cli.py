"""`distill minhash DATASET`: the stage's spec and its command, a thin shell over `run_minhash`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ...cli_common import ShardRowsOpt
from ...config import Config, referenced_path
from ...stage import StageSpec, stage_command
from .config import MinhashConfig
from .sigstore import ref_blocks


def summary(m: dict[str, Any], out: Path) -> str:
    return (f"{out}: {m['rows_in']} rows in, {m['rows_out']} kept, {m['rows_rejected']} near-duplicates removed "
            f"({m['candidate_pairs']} candidate pairs, {m['verified_pairs']} verified); clusters in {out / 'clusters.parquet'}")


def run(input: Path, out: Path, cfg: MinhashConfig, ctx) -> dict[str, Any]:
    """`run_minhash` with its per-block and per-band tasks on the context's executor: local processes
    (`[minhash] workers`), or Ray tasks on every CPU of the cluster.
    `ctx.against` (published datasets with signatures in this run's format) adds to `[minhash] against`;
    this run's signatures are never registered with them."""
    from .stage import run_minhash  # its compiled kernels load numba: 0.15 s of every CLI start
    if ctx.against:
        cfg = cfg.model_copy(update={"against": [*cfg.against, *ctx.against], "add_to_against": False})
    return run_minhash(input, out, cfg, executor=ctx.executor, limit=ctx.limit, run_id=ctx.run_id,
                       progress=ctx.progress, echo=ctx.echo)


def check(cfg: Config, section: MinhashConfig, input: Path | None) -> None:
    for a in section.against:
        referenced_path(cfg, "minhash", "against", a, kind="dir")
    ref_blocks(section.against, section.signature_format(), 0)  # stored signatures present, of this format


SPEC = StageSpec("minhash", MinhashConfig, run, summary,
                 "remove near-duplicate text (MinHash LSH, verified, keep policy by score/length/id)", check=check)

minhash_cmd = stage_command(
    SPEC, dataset_help="Input dataset folder (e.g. the orca output, or an imported file's folder).",
    help="""Remove near-duplicate rows (MinHash LSH, verified): kept rows, rejected/ with the duplicated row's id, clusters.parquet.""",
    shared=("config", "workdir", "run_id", "limit", "seed", "executor", "ray_address", "no_progress"),
    options={
        "shard_rows": (ShardRowsOpt, None),
        "threshold": (Annotated[Optional[float], typer.Option(help="Jaccard similarity at or above which a row is a near-duplicate (default 0.7).")], None),
        "recall": (Annotated[Optional[float], typer.Option("--recall", help="Least candidate probability at the threshold; bands are chosen from it (default 0.95).")], None),
        "num_perm": (Annotated[Optional[int], typer.Option(help="MinHash permutations (default 128).")], None),
        "ngram": (Annotated[Optional[int], typer.Option(help="Shingle size (default 5).")], None),
        "unit": (Annotated[Optional[str], typer.Option(help="Shingle unit: word, or char for CJK (default word).")], None),
        "hash": (Annotated[Optional[str], typer.Option("--hash", help="fast, or datasketch (sha1, bit-identical to datasketch) (default fast).")], None),
        "verify": (Annotated[Optional[str], typer.Option(help="exact (shingle Jaccard) or estimate (signature) (default exact).")], None),
        "cluster": (Annotated[Optional[str], typer.Option(help="leader (remove only verified duplicates of a kept row) or component (default leader).")], None),
        "workers": (Annotated[Optional[int], typer.Option(help="Worker processes (default 2); with --executor ray, tasks run on every CPU of the cluster.")], None),
        "against": (Annotated[Optional[list[Path]], typer.Option("--against", help="Published dataset with stored signatures to dedup against (repeatable).")], None),
        "add_to_against": (Annotated[bool, typer.Option("--add-to-against", help="Register this output's signatures with the first --against dataset.")], False),
        "keep_work": (Annotated[bool, typer.Option("--keep-work", help="Keep the phase files (_work/) after finishing.")], False),
    },
    overrides=lambda cfg, against, add_to_against, keep_work, recall, **kw: dict(
        kw, recall_at_threshold=recall, against=[str(p) for p in against] if against else None,
        add_to_against=add_to_against or None, keep_work=keep_work or None))
