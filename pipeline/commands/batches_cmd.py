"""`distill batches`: the batches a workdir's batch teacher submitted, their states and counts; `--cancel` cancels them.

Reads the batch journal (pipeline/teacher/batch_journal.py) of a workdir, a
run folder (its workdir's), or a journal folder itself; `--refresh` and
`--cancel` call the provider (the journal's base_url, the key in
teacher.api_key_env of `--config`, else OPENAI_API_KEY / ANTHROPIC_API_KEY)
and write the new states to the journal.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .. import cli_common as cc
from ..config import TeacherSection
from ..context import load
from ..errors import ConfigError
from ..teacher.batch_journal import JOURNAL, LIVE, BatchJournal
from ..teacher.factory import BATCH_DIR, batch_dir

KEY_ENV = {"openai_batch": "OPENAI_API_KEY", "anthropic_batch": "ANTHROPIC_API_KEY", "batch_file": "OPENAI_API_KEY"}


def find_journal(path: Path | None, config: Path | None, workdir: Path | None) -> Path:
    if path is not None:
        for folder in (path, path / BATCH_DIR, path.parent / BATCH_DIR):
            if (folder / JOURNAL).is_file():
                return folder
        raise ConfigError(f"{path}: no batch journal here, in {path / BATCH_DIR} or in {path.parent / BATCH_DIR}; "
                          "name the workdir of a run whose teacher is a batch backend")
    cfg = load(config, workdir=workdir)
    return batch_dir(cfg.teacher, Path(workdir or cfg.run.workdir))


def provider_for(rec: dict[str, Any], folder: Path, config: Path | None) -> Any:
    from ..teacher.batch_providers import make_provider
    env = load(config).teacher.api_key_env if config is not None else KEY_ENV.get(rec["provider"], "OPENAI_API_KEY")
    base_url = None if rec["provider"] == "batch_file" else rec["endpoint"]
    section = TeacherSection(backend=rec["provider"], base_url=base_url, model=rec.get("model"), api_key_env=env)
    return make_provider(section, folder)


def batches_cmd(
    path: Annotated[Optional[Path], typer.Argument(help="Workdir, run folder or batch journal folder [default: the config's workdir].")] = None,
    config: cc.ConfigOpt = None,
    workdir: cc.WorkdirOpt = None,
    refresh: Annotated[bool, typer.Option("--refresh", help="Ask the provider for each live batch's state first.")] = False,
    cancel: Annotated[bool, typer.Option("--cancel", help="Cancel every batch still in flight (a rerun asks again for the lines they did not answer).")] = False,
) -> None:
    """List a workdir's teacher batches (id, state, counts); --cancel cancels those in flight."""

    folder = find_journal(path, config, workdir)
    journal = BatchJournal(folder)
    recs = journal.records()
    if not recs:
        typer.echo(f"no batches in {folder}")
        return
    if refresh or cancel:
        for rec in recs:
            if rec["state"] != "submitted":
                continue
            provider = provider_for(rec, folder, config)
            st = provider.cancel(rec["batch_id"]) if cancel else provider.status(rec["batch_id"])
            journal.update(rec["key"], status=st.status, counts=st.counts)
            if cancel:
                typer.echo(f"cancel asked: {rec['batch_id']} ({st.status})")
        recs = journal.records()
    typer.echo(f"{len(recs)} batch(es) in {folder}")
    typer.echo(f"{'batch':<36} {'provider':<16} {'state':<10} {'status':<12} {'lines':>6}  counts  created  reason")
    for r in recs:
        counts = ",".join(f"{k}={v}" for k, v in (r.get("counts") or {}).items()) or "-"
        reason = ",".join(f"{k}={v}" for k, v in (r.get("reason") or {}).items())
        created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(float(r.get("created") or 0)))
        typer.echo(f"{str(r.get('batch_id') or r['key']):<36} {r['provider']:<16} {r['state']:<10} "
                   f"{str(r.get('status')):<12} {int(r.get('count') or 0):>6}  {counts}  {created}  {reason}")
    live = sum(1 for r in recs if r["state"] in LIVE)
    if live:
        typer.echo(f"{live} in flight: rerun the command that submitted them to collect (or --cancel)")
