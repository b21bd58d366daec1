"""`distill self-instruct`: the stage's spec and its command, a thin shell over `run_self_instruct`.

Reads the seed pool (`--seeds FILE` or a dataset folder; default the team's
data/seed_tasks.jsonl); writes `--out` (default `<workdir>/<run-id>/self_instruct`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ...config import Config, referenced_path
from ...runner import summarize_drops
from ...stage import StageSpec, stage_command
from .config import SelfInstructConfig
from .seeds import load_seeds
from .stage import run_self_instruct

SECTION = "self_instruct"


def _overrides(cfg: Config, mode: str | None, sampling: dict[str, Any], **flat: Any) -> dict[str, Any]:
    """CLI flags on top of the config section; sampling flags go to the table the mode uses."""
    mode = mode or cfg.self_instruct.get("mode", "self_instruct")
    table = "alpaca" if mode == "alpaca" else "bootstrap"
    out: dict[str, Any] = {k: v for k, v in flat.items() if v is not None}
    if mode is not None:
        out["mode"] = mode
    given = {k: v for k, v in sampling.items() if v is not None}
    if given:
        out[table] = {**cfg.self_instruct.get(table, {}), **given}
    return out


def summary(manifest: dict[str, Any], out: Path) -> str:
    t = manifest.get("totals", {})
    lines = [f"self-instruct: {manifest['accepted_instructions']}/{manifest['target']} instructions accepted "
             f"({manifest['stop_reason']}: {manifest['stop_detail']}) -> {out}",
             f"  rows: {manifest['rows_out']} instances; {int(t.get('classification_tasks', 0))} classification tasks",
             f"  rejected: {manifest['rows_rejected']} ({summarize_drops(manifest)})",
             f"  teacher: {int(t.get('requests', 0))} requests, "
             f"{int(t.get('teacher_prompt_tokens', 0)) + int(t.get('teacher_completion_tokens', 0))} tokens"]
    if manifest["seeds"].get("duplicates"):
        lines.append(f"  seeds: {manifest['seeds']['duplicates']} duplicate seed instructions skipped "
                     f"(see _manifest.json seeds.duplicate_examples)")
    return "\n".join(lines)


def run(input: Path | None, out: Path, cfg: SelfInstructConfig, ctx) -> dict[str, Any]:
    """Seeds from `input` when given (`distill run --input`), else the section's or the team's."""
    return run_self_instruct(out, ctx, cfg, seeds=input if input is not None else cfg.seeds, echo=ctx.echo)


def _cli_overrides(cfg: Config, mode, temperature, top_p, presence_penalty, max_tokens, batch_size, shard_rows,
                   seeds, **flat: Any) -> dict[str, Any]:
    return _overrides(cfg, mode, {"temperature": temperature, "top_p": top_p, "presence_penalty": presence_penalty,
                                  "max_tokens": max_tokens},
                      request_batch_size=batch_size, shard_tasks=shard_rows, seeds=str(seeds) if seeds else None,
                      **flat)


def check(cfg: Config, section: SelfInstructConfig, input: Path | None) -> None:
    if input is not None:
        return  # `distill run --input` gives the seeds; run_plan checks that dataset
    if section.seeds is not None:
        referenced_path(cfg, SECTION, "seeds", section.seeds, kind="any")
    load_seeds(section.seeds)  # the stage's own reader: a bad seed file fails now, not after a lock and a ping


SPEC = StageSpec(SECTION, SelfInstructConfig, run, summary,
                 "grow new tasks from the seed pool with the teacher (Self-Instruct)", needs_teacher=True,
                 needs_input=False,
                 local_only="its bootstrap filters every reply in request order against the whole pool it grew",
                 check=check)

self_instruct_cmd = stage_command(
    SPEC, help="""Grow new tasks from a seed pool with the teacher (Self-Instruct): bootstrap, filter, ROUGE-L novelty, classify, generate instances; a rerun resumes.

    Runs in this process by design, also in `distill run --executor ray`: every bootstrap reply is filtered, in request order, against the pool the earlier ones grew. The default schedule keeps teacher.concurrency requests in flight; --schedule paper sends the paper's batches of 5.""",
    shared=("config", "workdir", "run_id", "seed", "no_progress"),
    options={
        "seeds": (Annotated[Optional[Path], typer.Option("--seeds", help="Seed tasks: Self-Instruct seed JSONL, Alpaca JSON, plain JSONL, or a dataset folder [default: the team's data/seed_tasks.jsonl].")], None),
        "num_instructions": (Annotated[Optional[int], typer.Option("--num-instructions", "--target", min=1, help="Grow the machine-generated pool to this many instructions [default: 20].")], None),
        "mode": (Annotated[Optional[str], typer.Option("--mode", help="self_instruct (the paper's bootstrap loop) or alpaca (whole tasks per call).")], None),
        "schedule": (Annotated[Optional[str], typer.Option("--schedule", help="window (requests in flight from pool snapshots, replies filtered in request order) or paper (batches of --batch-size, each waiting for all its replies) [default: window].")], None),
        "window": (Annotated[Optional[int], typer.Option("--window", min=1, help="--schedule window: requests in flight [default: teacher.concurrency].")], None),
        "batch_size": (Annotated[Optional[int], typer.Option("--batch-size", min=1, help="--schedule paper: bootstrap prompts per batch [default: 5].")], None),
        "temperature": (Annotated[Optional[float], typer.Option("--temperature", help="Bootstrap sampling temperature [default: 0.7; alpaca 1.0].")], None),
        "top_p": (Annotated[Optional[float], typer.Option("--top-p", help="Bootstrap top_p [default: 0.5; alpaca 1.0].")], None),
        "presence_penalty": (Annotated[Optional[float], typer.Option("--presence-penalty", help="Bootstrap presence penalty [default: 2; alpaca 0].")], None),
        "max_tokens": (Annotated[Optional[int], typer.Option("--max-tokens", min=1, help="Bootstrap max tokens per reply [default: 1024; alpaca 3072].")], None),
        "max_requests": (Annotated[Optional[int], typer.Option("--max-requests", min=1, help="Start no new bootstrap batch after this many teacher requests.")], None),
        "max_tokens_total": (Annotated[Optional[int], typer.Option("--max-tokens-total", min=1, help="Start no new bootstrap batch after this many tokens.")], None),
        "patience": (Annotated[Optional[int], typer.Option("--patience", min=1, help="Stop after this many bootstrap requests in a row accept nothing [default: 50].")], None),
        "include_seeds": (Annotated[Optional[bool], typer.Option("--include-seeds/--no-include-seeds", help="Also write the seed tasks (origin 'seed').")], None),
        "logprobs": (Annotated[Optional[int], typer.Option("--logprobs", min=1, max=20, help="Keep the top-K token logprobs of each instance's output in meta.self_instruct.logprobs (backends that return them).")], None),
        "shard_rows": (Annotated[Optional[int], typer.Option("--shard-rows", min=1, help="Accepted tasks per output shard, the unit of restart [default: 200].")], None),
    },
    overrides=_cli_overrides)
