"""Progress and log output that suits both a terminal and cron.

On a terminal, stages show tqdm bars (runner.Progress). Without one (cron,
CI, a pipe), a bar would be noise, yet a silent job that runs for an hour
looks hung: so stages print a plain line every `interval` seconds instead.
`--log-json FILE` additionally writes one JSON object per event (stage start
and end, periodic progress, errors) for log shippers; "-" means stderr.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from .errors import ConfigError

LOGGER = logging.getLogger("distill")
_DEFAULT_INTERVAL_S = 30.0


def progress_interval() -> float:
    """Seconds between plain progress lines when stderr is not a terminal ($DISTILL_PROGRESS_INTERVAL)."""
    raw = os.environ.get("DISTILL_PROGRESS_INTERVAL")
    if not raw:
        return _DEFAULT_INTERVAL_S
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"DISTILL_PROGRESS_INTERVAL={raw!r}: expected a number of seconds") from None
    if not value > 0:  # also NaN
        raise ConfigError(f"DISTILL_PROGRESS_INTERVAL={raw!r}: must be > 0")
    return value


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", None) or "message",
            "msg": record.getMessage(),
        }
        out.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class _JsonFile(logging.FileHandler):
    """The --log-json file. A write that fails later (a full disk) says so once, on stderr, and the file gets no
    more lines: losing the log must not stop the run, nor print logging's own traceback for every event."""

    broken = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.broken:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        if self.broken:
            return
        self.broken = True
        e = sys.exc_info()[1]
        why = (e.strerror if isinstance(e, OSError) else None) or e
        sys.stderr.write(f"warning: --log-json {self.baseFilename}: cannot write ({why}); no more JSON log lines\n")

    def close(self) -> None:
        try:
            super().close()
        except OSError:  # the buffered tail cannot be written either: already said in handleError
            self.broken = True


_json_handler: logging.Handler | None = None


def configure_json(target: str | Path | None) -> None:
    """Send every `distill` log record to `target` as JSON lines (None: stop)."""
    global _json_handler
    if _json_handler is not None:
        LOGGER.removeHandler(_json_handler)
        _json_handler.close()
        _json_handler = None
    if target is None:
        return
    if str(target) == "-":
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
    else:
        path = Path(target)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = _JsonFile(path, encoding="utf-8")  # appends: one file can span nightly runs
        except OSError as e:
            raise ConfigError(f"--log-json {path}: cannot open the log file for appending ({e.strerror or e}); "
                              "give a writable file path, or '-' for stderr") from None
    handler.setFormatter(JsonLines())
    handler.setLevel(logging.INFO)
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    _json_handler = handler


def event(name: str, msg: str = "", level: int = logging.INFO, **fields: Any) -> None:
    """A structured event: a JSON line when --log-json is on, nothing otherwise."""
    if _json_handler is not None:
        LOGGER.log(level, msg or name, extra={"event": name, "fields": fields})


def one_line(e: BaseException) -> str:
    """The first line of `e`'s message, printable: pyarrow and parsers quote the corrupt bytes they met,
    which would garble a terminal or split a log line."""
    text = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def plain_line(text: str, stream: TextIO | None = None) -> None:
    """A progress line for logs without a terminal (flushed: cron mails and journald read it live)."""
    stream = stream or sys.stderr
    stream.write(text + "\n")
    stream.flush()
