"""Progress lines without a terminal, and --log-json structured logs."""

import io
import json
import sys

import pytest

from pipeline import cli, logs
from pipeline.config import load_config
from pipeline.context import RunPaths
from pipeline.runner import Progress, run_shards
from pipeline.runplan import run_plan
from pipeline.stage import StageSpec
from pipeline.store import Dataset
from tests.test_runner import LengthFilter, _input


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_plain_progress_lines_when_not_a_terminal(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr("pipeline.runner.time.monotonic", clock)
    monkeypatch.setenv("DISTILL_PROGRESS_INTERVAL", "10")
    out = io.StringIO()  # not a tty: no bar, plain lines
    bar = Progress(100, "orca", stream=out)
    assert bar.bar is None
    clock.t += 5
    bar.update(10, tokens=500)
    assert out.getvalue() == ""  # inside the interval: quiet
    clock.t += 5
    bar.update(15, errors=1, tokens=500)
    line = out.getvalue().strip()
    assert line.startswith("[orca] 25/100 rows (25%)") and "2.5 rows/s" in line and "1 errors" in line
    assert "ETA 30s" in line
    clock.t += 5
    bar.update(75)  # inside the interval: no line yet, so close() gives the last word
    bar.close()
    last = out.getvalue().strip().splitlines()[-1]
    assert last.startswith("[orca] 100/100 rows (100%)") and last.endswith("done")


def test_disabled_progress_prints_nothing(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr("pipeline.runner.time.monotonic", clock)
    out = io.StringIO()
    bar = Progress(10, "x", enabled=False, stream=out)
    clock.t += 100
    bar.update(10)
    bar.close()
    assert out.getvalue() == ""


def test_bad_interval_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("DISTILL_PROGRESS_INTERVAL", "soon")
    try:
        logs.progress_interval()
    except ValueError as e:
        assert "DISTILL_PROGRESS_INTERVAL" in str(e)
    else:
        raise AssertionError("expected a ValueError")


def test_log_json_records_run_events(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_PROGRESS_INTERVAL", "0.000001")  # every update is a progress event
    log = tmp_path / "logs" / "distill.jsonl"
    logs.configure_json(log)
    try:
        ds, _ = _input(tmp_path)

        def step(input, out, cfg, ctx):
            return run_shards(LengthFilter(), ds, out, ctx, shard_rows=7)

        cfg = load_config(None)
        paths = RunPaths(tmp_path / "work", "r1")
        summary = run_plan(cfg, paths, plan=[StageSpec("filter", None, step, str, "keep even rows", needs_input=False)],
                           echo=lambda s: None, progress=False)
    finally:
        logs.configure_json(None)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    names = [e["event"] for e in events]
    assert names[0] == "stage_start" and names[-2:] == ["stage_end", "run_end"]
    assert "progress" in names
    end = next(e for e in events if e["event"] == "stage_end")
    assert end["stage"] == "filter" and end["rows_out"] == Dataset(tmp_path / "work" / "r1" / "filter").num_rows()
    assert end["drops"] == {"odd_number": 12}
    assert events[-1]["final_rows"] == summary["final_rows"] == 13
    assert all(e["ts"].endswith("Z") and e["level"] == "info" for e in events)


def test_log_json_option_records_user_errors(tmp_path, monkeypatch):
    log = tmp_path / "distill.jsonl"
    monkeypatch.setattr(sys, "argv", ["distill", "--log-json", str(log), "inspect", str(tmp_path / "missing")])
    try:
        with pytest.raises(SystemExit) as exc:
            cli.main()
    finally:
        logs.configure_json(None)
    assert exc.value.code == 3
    events = [json.loads(line) for line in log.read_text().splitlines()]
    err = [e for e in events if e["event"] == "error"]
    assert err and err[-1]["exit_code"] == 3 and "missing" in err[-1]["msg"] and err[-1]["level"] == "error"
