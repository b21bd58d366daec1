"""The `distill` command: a thin typer shell over the Python API.

Each stage module owns an explicit `Typer()` app (or command function); this
root composes them. Errors that users can fix (bad config, bad input, a
missing dataset, an unreachable teacher) print one line with the fix and exit
with a distinct code; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import errno
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__, logs
from .commands import batches_cmd, config_cmd, dataset_cmds, doctor_cmd, plan_cmd, refresh_cmd, report_cmd, run_cmd
from .errors import USER_ERRORS, InputFileError, StoreWriteError, exit_code_for
from .stages.evol_instruct import cli as evol_cli
from .stages.export import cli as export_cli
from .stages.hard import cli as hard_cli
from .stages.minhash import cli as minhash_cli
from .stages.orca import cli as orca_cli
from .stages.score import cli as score_cli
from .stages.select import cli as select_cli
from .stages.self_instruct import cli as self_instruct_cli
from .stages.semdedup import cli as semdedup_cli
from .store import explain_os_error
from .teacher import cli as teacher_cli

app = typer.Typer(
    name="distill",
    help="Turn a teacher LLM into SFT training data: Self-Instruct, Evol-Instruct, Orca traces, dedup, scoring, export.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Help texts say "[default: ...]"; rich markup would swallow the brackets as tags.
    rich_markup_mode=None,
)

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"distill {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
    log_json: Annotated[Optional[Path], typer.Option("--log-json", metavar="FILE", help="Also write structured logs (one JSON object per event) to FILE, appending; '-' for stderr.")] = None,
) -> None:
    _state["debug"] = debug
    logs.configure_json(log_json)


def _register() -> None:
    # Explicit composition, in pipeline order: no self-registering steps.

    app.command("import", help=dataset_cmds.import_cmd.__doc__)(dataset_cmds.import_cmd)
    app.command("inspect", help=dataset_cmds.inspect_cmd.__doc__)(dataset_cmds.inspect_cmd)
    # -- stage commands (each stage issue adds its line here) --
    app.command("self-instruct", help=self_instruct_cli.self_instruct_cmd.__doc__)(self_instruct_cli.self_instruct_cmd)
    app.command("evol-instruct", help=evol_cli.evol_instruct_cmd.__doc__)(evol_cli.evol_instruct_cmd)
    app.command("hard", help=hard_cli.hard_cmd.__doc__)(hard_cli.hard_cmd)
    app.add_typer(orca_cli.app, name="orca")
    app.command("minhash", help=minhash_cli.minhash_cmd.__doc__)(minhash_cli.minhash_cmd)
    app.command("semdedup", help=semdedup_cli.semdedup_cmd.__doc__)(semdedup_cli.semdedup_cmd)
    app.command("score", help=score_cli.score_cmd.__doc__)(score_cli.score_cmd)
    app.command("select", help=select_cli.select_cmd.__doc__)(select_cli.select_cmd)
    app.command("export", help=export_cli.export_cmd.__doc__)(export_cli.export_cmd)
    app.command("run", help=run_cmd.run_cmd.__doc__)(run_cmd.run_cmd)
    app.command("refresh", help=refresh_cmd.refresh_cmd.__doc__)(refresh_cmd.refresh_cmd)
    app.command("plan", help=plan_cmd.plan_cmd.__doc__)(plan_cmd.plan_cmd)
    app.command("report", help=report_cmd.report_cmd.__doc__)(report_cmd.report_cmd)
    app.add_typer(teacher_cli.app, name="teacher")
    app.command("batches", help=batches_cmd.batches_cmd.__doc__)(batches_cmd.batches_cmd)
    app.add_typer(config_cmd.app, name="config")
    app.command("doctor", help=doctor_cmd.doctor_cmd.__doc__)(doctor_cmd.doctor_cmd)


_register()


def _as_user_error(e: BaseException) -> Exception | None:
    """The one-line error for a failure that the machine or the user's data caused outside the checks that
    raise typed errors: an OS error with an errno (disk full, permission, read-only, not a folder) is a
    failed write (exit 5); a RecursionError or UnicodeError comes from nesting or text in the data (exit 3).
    None for anything else: that is a bug, and its traceback is shown."""
    if isinstance(e, OSError) and e.errno:
        where = Path(e.filename) if e.filename else Path("(a file)")
        if e.errno in (errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EROFS):
            return explain_os_error(e, where)
        return StoreWriteError(e.errno, f"{where}: {e.strerror or e} (--debug shows where)")
    if isinstance(e, RecursionError):
        return InputFileError(f"input data nested too deeply to process ({e}); flatten it, or use JSONL "
                              "so a deep row is rejected alone (--debug shows where)")
    if isinstance(e, UnicodeError):
        return InputFileError(f"input text that is not valid UTF-8: {e} (--debug shows where)")
    return None


def _fail(e: BaseException) -> None:
    """Log `e`, then exit with its code and one line (or re-raise it under --debug)."""
    logs.event("error", str(e), level=logging.ERROR, exit_code=exit_code_for(e), kind=type(e).__name__)
    if _state["debug"]:
        raise
    # An OSError's str() leads with "[Errno N]"; its strerror is the line written for the user.
    text = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    typer.secho(f"error: {text}", fg=typer.colors.RED, err=True)
    sys.exit(exit_code_for(e))


def main() -> None:
    try:
        # standalone_mode=False returns a command's `typer.Exit(code)` instead of exiting: pass it on.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except USER_ERRORS as e:
        _fail(e)
    except KeyboardInterrupt:
        typer.secho("interrupted: finished shards are kept; rerun the same command to resume", err=True)
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as e:
        if isinstance(e, _click_exception_types()):  # usage errors: one line and exit 2, never a traceback
            e.show()
            sys.exit(e.exit_code)
        mapped = _as_user_error(e)
        if mapped is None or _state["debug"]:
            raise
        try:
            raise mapped from e
        except USER_ERRORS as m:
            _fail(m)


def _click_exception_types() -> tuple[type, ...]:
    """Usage-error classes: recent typer vendors its own click, older ones use the click package."""
    types: list[type] = []
    try:
        from typer._click.exceptions import ClickException as vendored
        types.append(vendored)
    except ImportError:
        pass
    try:
        import click
        types.append(click.exceptions.ClickException)
    except ImportError:
        pass
    return tuple(types)


if __name__ == "__main__":
    main()
