"""`distill semdedup DATASET`: the stage's spec and its command, a thin shell over `run_semdedup`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ...config import Config
from ...embeddings.encoder import check_model_path
from ...runner import summarize_drops
from ...stage import StageSpec, referenced_dataset, stage_command
from .config import SemdedupConfig


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


def run(input: Path, out: Path, cfg: SemdedupConfig, ctx) -> dict[str, Any]:
    """`run_semdedup`; `ctx.against` (the refresh's published pool) replaces `[semdedup] against`."""
    from .stage import run_semdedup
    if ctx.against:
        cfg = cfg.model_copy(update={"against": ctx.against[0]})
    return run_semdedup(input, out, cfg, run_id=ctx.run_id, workdir=ctx.workdir, shard_rows=ctx.shard_rows,
                        limit=ctx.limit, seed=ctx.seed, progress=ctx.progress, executor=ctx.executor,
                        notify=ctx.echo)


def check(cfg: Config, section: SemdedupConfig, input: Path | None) -> None:
    check_model_path(cfg, "semdedup", section)
    referenced_dataset(cfg, "semdedup", "against", section.against)


SPEC = StageSpec("semdedup", SemdedupConfig, run, summary,
                 "drop rows that say the same thing in other words (embedding near-duplicates)", check=check)

semdedup_cmd = stage_command(
    SPEC, dataset_help="Input dataset folder (e.g. the minhash stage's output).",
    help="""Remove rows that say the same thing in other words (embedding cosine near-duplicates).""",
    options={
        "fast": (Annotated[Optional[bool], typer.Option("--fast/--full", help="Fast static embedder distilled from the model (300x+ the rows/s on a CPU; finds ~93% of the full model's pairs) or the full model (fidelity) [default: full].")], None),
        "verify": (Annotated[Optional[bool], typer.Option("--verify/--no-verify", help="With --fast: wider candidate cut, each pair re-checked by the full model (~99% of its pairs, none it rejects).")], None),
        "model": (Annotated[Optional[str], typer.Option("--model", help="sentence-transformers model: 'minilm' (bundled) or a local folder.")], None),
        "device": (Annotated[Optional[str], typer.Option("--device", help="Where the full model runs: cpu, cuda or auto [default: auto].")], None),
        "batch_size": (Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Encoder batch size [default: tuned].")], None),
        "threshold": (Annotated[Optional[float], typer.Option("--threshold", help="Cosine at or above which rows are duplicates [0.95].")], None),
        "search": (Annotated[Optional[str], typer.Option("--search", help="auto, exact, ivf (approximate) or kmeans (SemDeDup).")], None),
        "against": (Annotated[Optional[Path], typer.Option("--against", help="Published dataset: also drop rows that duplicate its rows.")], None),
        "no_cache": (Annotated[bool, typer.Option("--no-cache", help="Do not read or write the embedding cache.")], False),
    },
    overrides=lambda cfg, against, no_cache, **kw: dict(
        kw, against=str(against) if against else None, cache=False if no_cache else None))
