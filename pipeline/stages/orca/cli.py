"""`distill orca`: a thin typer shell over `run_orca` and `calibrate`.

    distill orca DATASET [--out DIR] [--strategies] ...   (short for `distill orca generate DATASET`)
    distill orca calibrate DATASET [--out FILE.toml] [--judge exact|teacher]
    distill orca verify DATASET [--out DIR] [--samples N]   (verified traces: verify/)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from ...cli_common import ConfigOpt, LimitOpt, RunIdOpt, SeedOpt, WorkdirOpt
from ...config import Config, referenced_path, stage_config
from ...context import load, make_context, resolve_run
from ...runner import summarize_drops
from ...stage import StageSpec, stage_command
from .calibrate import calibrate
from .config import OrcaConfig
from .stage import OrcaStage, run_orca
from .verify import cli as verify_cli

SECTION = "orca"


class _DefaultGenerate(TyperGroup):
    """Anything that is not a sub-command name goes to `generate`, so that
    `distill orca DATASET --out DIR` follows the command convention while
    `distill orca calibrate ...` stays an explicit sub-command."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["generate", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_DefaultGenerate, no_args_is_help=True,
    help="Answer instructions with explanation traces (Orca system messages or Orca 2 strategies), "
         "with prompt erasure in Orca 2 mode. `distill orca DATASET` is short for `distill orca generate DATASET`.")

KindOpt = Annotated[Optional[str], typer.Option("--task-kind", help="Task-kind detection: rules, or teacher (rules as fallback) [default: config, rules].")]
MaxTokOpt = Annotated[Optional[int], typer.Option("--max-tokens", min=1, help="Completion budget per answer [default: config, 512].")]


def summary(manifest: dict[str, Any], out: Path) -> str:
    totals = manifest.get("totals", {})
    kinds = {k.split(".", 1)[1]: int(v) for k, v in totals.items() if k.startswith("task_kind.")}
    used = {k.split(".", 1)[1]: int(v) for k, v in totals.items() if k.startswith("strategy.")}
    lines = [f"orca: {manifest['rows_in']} rows in, {manifest['rows_out']} answered, "
             f"{manifest['rows_rejected']} rejected -> {out}",
             f"  task kinds: {', '.join(f'{k}={v}' for k, v in sorted(kinds.items(), key=lambda x: -x[1]))}",
             f"  system messages / strategies kept: {', '.join(f'{k}={v}' for k, v in sorted(used.items()))}",
             f"  drops: {summarize_drops(manifest)}",
             f"  tokens: {int(totals.get('teacher_prompt_tokens', 0))} prompt, "
             f"{int(totals.get('teacher_completion_tokens', 0))} completion"]
    return "\n".join(lines)


def run(input: Path, out: Path, cfg: OrcaConfig, ctx) -> dict[str, Any]:
    return run_orca(input, out, ctx, cfg, shard_rows=ctx.shard_rows, limit=ctx.limit)


def check(cfg: Config, section: OrcaConfig, input: Path | None) -> None:
    if section.strategy_map_file:
        referenced_path(cfg, SECTION, "strategy_map_file", section.strategy_map_file)
    OrcaStage(section)  # reads both catalogs, the strategy map and the generic system message, and checks them


SPEC = StageSpec(SECTION, OrcaConfig, run, summary,
                 "answer every instruction with explanation traces (Orca; prompt-erased in Orca 2 mode)", needs_teacher=True,
                 missing_input="an input dataset: run it after evol_instruct, or pass --input", check=check)

generate_cmd = app.command("generate")(stage_command(
    SPEC, dataset_help="Instruction dataset folder (e.g. the evol_instruct output, or `distill import` of a JSON file).",
    help="""Answer every instruction with the teacher under a chosen system message or strategy; the training messages keep the system message (Orca 1) or carry only the generic one (Orca 2, prompt erasure).""",
    options={
        "strategies": (Annotated[Optional[bool], typer.Option("--strategies/--system-messages", help="Orca 2 strategy instructions per task kind, or Orca 1 system messages [default: config, system messages].")], None),
        "strategy_map": (Annotated[Optional[Path], typer.Option("--strategy-map", help="TOML mapping written by `distill orca calibrate` (implies --strategies).")], None),
        "logprobs": (Annotated[Optional[int], typer.Option("--logprobs", min=1, max=20, help="Keep the top-K token logprobs in meta.orca.logprobs (backends that return them).")], None),
        "task_kind": (KindOpt, None),
        "erase_system": (Annotated[Optional[str], typer.Option("--erase-system", help="Prompt erasure in `messages`: auto (Orca 2 mode only), always or never [default: config, auto].")], None),
        "max_tokens": (MaxTokOpt, None),
        "temperature": (Annotated[Optional[float], typer.Option("--temperature", min=0, max=2, help="Sampling temperature [default: config, 0.7].")], None),
        "retry_truncated": (Annotated[Optional[int], typer.Option("--retry-truncated", min=1, help="Retry cut-off answers once with this larger token budget.")], None),
    },
    overrides=lambda cfg, strategies, strategy_map, retry_truncated, **kw: dict(
        kw, strategies=True if strategy_map else strategies,
        strategy_map_file=str(strategy_map) if strategy_map else None, retry_truncated_max_tokens=retry_truncated)))


app.command("verify", help=verify_cli.verify_cmd.__doc__)(verify_cli.verify_cmd)


@app.command("calibrate")
def calibrate_cmd(
    dataset: Annotated[Path, typer.Argument(help="Labelled dataset folder: each row's `output` is the reference answer.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="TOML file to write [default: <workdir>/<run-id>/orca_strategy_map.toml].")] = None,
    judge: Annotated[str, typer.Option("--judge", help="exact (normalised match of the final answer) or teacher (1-5 rating against the reference).")] = "exact",
    per_kind: Annotated[int, typer.Option("--per-kind", min=1, help="Labelled rows sampled per task kind.")] = 8,
    strategy: Annotated[Optional[list[str]], typer.Option("--strategy", help="Candidate strategy (repeatable) [default: every strategy in the catalog].")] = None,
    task_kind: KindOpt = None,
    max_tokens: MaxTokOpt = None,
    config: ConfigOpt = None,
    workdir: WorkdirOpt = None,
    run_id: RunIdOpt = None,
    limit: LimitOpt = None,
    seed: SeedOpt = None,
) -> None:
    """Pick the best strategy per task kind on a small labelled sample and write the mapping (read by `distill orca --strategy-map FILE`)."""

    cfg = load(config, workdir=workdir, run_id=run_id, limit=limit, seed=seed)
    ocfg = stage_config(cfg, SECTION, OrcaConfig, task_kind=task_kind, max_tokens=max_tokens)
    paths = resolve_run(cfg, workdir, run_id)
    target = out or (paths.run_dir / "orca_strategy_map.toml")
    ctx = make_context(cfg, paths, progress=False)
    try:
        result = calibrate(dataset, target, ctx, ocfg, per_kind=per_kind, judge=judge,  # type: ignore[arg-type]
                           strategies=strategy, limit=cfg.run.limit)
    finally:
        ctx.close()
    typer.echo(f"calibrated {len(result.scores)} task kinds on {result.rows} labelled rows "
               f"({result.counts.get('requests', 0)} answers, judge={judge}) -> {target}")
    for kind, cells in result.scores.items():
        best = result.strategy_map.get(kind, "(no signal: default kept)")
        row = ", ".join(f"{n}={c['score']:.2f} (f1 {c['f1']:.2f})" for n, c in cells.items())
        typer.echo(f"  {kind}: {best}   [{row}]")
