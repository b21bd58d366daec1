"""Errors a user can fix, and the exit codes the CLI (and cron) sees for them.

Exit codes: 0 success, 2 usage or config error, 3 data error (bad input file or
dataset), 4 teacher unavailable, 5 write failed (disk full, permissions),
6 locked (another run holds the lock), 7 budget exhausted, 8 nothing new,
9 batches in flight (a batch teacher stopped waiting; rerun to collect).
"""

from __future__ import annotations

import importlib


class ConfigError(ValueError):
    """A config problem, already phrased for the user."""


class TemplateError(KeyError):
    """A prompt template that cannot be rendered (missing variables, all named at once)."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class DatasetError(ValueError):
    """A folder that is not a usable dataset; the message names the folder and the problem."""


class StoreWriteError(OSError):
    """A write failed (disk full, permissions); nothing partial was left visible."""


class Locked(RuntimeError):
    """Another run holds the lock; the message names it."""


class InputFileError(ValueError):
    """A user's input file cannot be used (format, no valid rows); names file and line."""


class TeacherUnavailable(RuntimeError):
    """The configured teacher cannot be reached or loaded."""


class BatchesInFlight(RuntimeError):
    """A batch teacher stopped waiting (teacher.batch_wait_s) with batches still in flight at the provider;
    they are journaled, and a rerun polls them instead of submitting again."""


class BudgetExhausted(RuntimeError):
    """A spend cap (--max-cost) was reached; what was finished is kept and a rerun with more room continues."""


class MissingExtra(RuntimeError):
    """An optional dependency (an extra) is not installed; the message says how to install it."""


def import_extra(module: str, hint: str):
    """The optional dependency `module`, or MissingExtra with `hint` (how to install it)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtra(f"{hint} ({e})") from None


EXIT_CODES: dict[type, int] = {
    ConfigError: 2, TemplateError: 2, MissingExtra: 2,
    InputFileError: 3, DatasetError: 3,
    TeacherUnavailable: 4,
    StoreWriteError: 5,
    Locked: 6,
    BudgetExhausted: 7,
    BatchesInFlight: 9,
}

USER_ERRORS = tuple(EXIT_CODES)


def exit_code_for(exc: BaseException) -> int:
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return 1
