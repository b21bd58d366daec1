"""refresh_summary.json: what one night did, for cron, dashboards and `distill report`.

Written to the run folder at the end of every refresh that got as far as
creating its run, whatever the outcome (published, nothing new, budget
exhausted, teacher unavailable, data or write error, interrupted). Top-level
keys: run_id, status, exit_code, message, version (null unless published),
previous_version, seed, seed_source, timings, rows (generated, after dedup,
selected, added, pool before/after), stages (per stage: status, seconds,
rows in/out/rejected, drops by reason, teacher tokens), dropped (stage ->
reason -> rows), teacher (ping, requests, tokens), budget, cost_estimate.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..errors import exit_code_for
from ..records import now_utc
from ..store import atomic_write_json
from ..teacher.base import MARKED, TeacherUsage

FILE = "refresh_summary.json"

# Outcomes that are not errors: the exit code cron sees for each.
EXIT_PUBLISHED, EXIT_BUDGET, EXIT_NOTHING_NEW = 0, 7, 8
STATUS_OF_CODE = {1: "failed", 2: "config_error", 3: "data_error", 4: "teacher_unavailable",
                  5: "write_failed", 6: "locked"}


class Summary:
    def __init__(self, path: Path, **head: Any):
        self.path = path
        self.t0 = time.monotonic()
        self.data: dict[str, Any] = {"status": "running", "exit_code": None, "message": None, "version": None,
                                     "started_at": now_utc().isoformat(), **head,
                                     "stages": [], "dropped": {}, "rows": {}}

    def add_stage(self, entry: dict[str, Any]) -> dict[str, Any]:
        self.data["stages"].append(entry)
        drops = entry.get("drops") or {}
        if drops:
            self.data["dropped"][entry["stage"]] = dict(drops)
        return entry

    def add_step(self, name: str, m: dict[str, Any], out: Path, seconds: float, tokens: int,
                 input_rows: int | None) -> dict[str, Any]:
        """A stage that ran: its manifest's counts, the teacher tokens it sent."""
        return self.add_stage({"stage": name, "status": "done", "seconds": round(seconds, 3), "out": str(out),
                               "input_rows": input_rows, "rows_in": m.get("rows_in"), "rows_out": m.get("rows_out"),
                               "rows_rejected": m.get("rows_rejected"), "drops": m.get("drops", {}),
                               "teacher_tokens": tokens})

    def finish(self, status: str, exit_code: int, message: str, version: str | None = None) -> None:
        self.data.update(status=status, exit_code=exit_code, message=message, version=version)

    def fail(self, exc: BaseException) -> None:
        if isinstance(exc, KeyboardInterrupt):
            self.finish("interrupted", 130, "interrupted")
        else:
            code = exit_code_for(exc)
            self.finish(STATUS_OF_CODE.get(code, "failed"), code, f"{type(exc).__name__}: {exc}".splitlines()[0])

    def add_teacher(self, usage: TeacherUsage, split: list[int] | None, prompt_rate: float,
                    completion_rate: float) -> None:
        """The teacher's work after the ping: counts from the driver's teacher `usage`, tokens from
        `split` ([prompt, completion]) when the budget counted them for the whole Ray cluster. The cost
        estimate is the tokens actually sent (cache hits excluded) times the configured rates per million."""
        since = usage.delta(TeacherUsage.from_marker(self.data["teacher"]["ping"]["stats"]))
        sent = {k: getattr(since, k) for k in MARKED}
        if split is not None:
            sent["prompt_tokens"], sent["completion_tokens"] = split
        self.data["teacher"].update(sent)
        p, c = sent["prompt_tokens"], sent["completion_tokens"]
        self.data["tokens"] = {"prompt": p, "completion": c, "total": p + c}
        self.data["cost_estimate"] = {"prompt_tokens": p, "completion_tokens": c, "prompt_cost_per_million": prompt_rate,
                                      "completion_cost_per_million": completion_rate,
                                      "total": round(p * prompt_rate / 1e6 + c * completion_rate / 1e6, 6)}

    def write(self) -> dict[str, Any]:
        self.data["finished_at"] = now_utc().isoformat()
        self.data["seconds"] = round(time.monotonic() - self.t0, 3)
        atomic_write_json(self.path, self.data)
        return self.data

