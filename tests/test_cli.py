"""The CLI shell: help for every command, import/inspect round trips, one-line errors."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from pipeline.cli import app

runner = CliRunner()


def _commands(cmd, prefix=()):
    for name, sub in getattr(cmd, "commands", {}).items():
        yield prefix + (name,)
        yield from _commands(sub, prefix + (name,))


def test_every_command_has_help_text():
    import typer.main
    names = list(_commands(typer.main.get_command(app)))
    assert ("import",) in names and ("inspect",) in names and ("run",) in names
    assert ("teacher", "serve") in names and ("config", "init") in names
    for path in names:
        res = runner.invoke(app, [*path, "--help"])
        assert res.exit_code == 0, (path, res.output)
        assert "Usage" in res.output


def test_import_and_inspect(tmp_path):
    src = tmp_path / "rows.jsonl"
    src.write_text('{"instruction": "Name three colours", "input": "", "output": "red, green, blue"}\n'
                   '{"instruction": 3}\n'
                   '{"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}\n')
    res = runner.invoke(app, ["import", str(src), "--out", str(tmp_path / "ds")])
    assert res.exit_code == 0, res.output
    assert "imported 2 rows" in res.output and "wrong_type=1" in res.output
    res = runner.invoke(app, ["inspect", str(tmp_path / "ds"), "--json"])
    info = json.loads(res.output)
    assert info["rows"] == 2 and info["rejected_rows"] == 1 and info["drops"] == {"wrong_type": 1}
    res = runner.invoke(app, ["inspect", str(tmp_path / "ds"), "--rejected", "--schema"])
    assert "line 2: field 'instruction' must be a string" in res.output
    assert "drop_reason" in res.output


def test_import_seed_format_one_row_per_instance(tmp_path):
    src = tmp_path / "seeds.jsonl"
    src.write_text(json.dumps({"id": "t1", "name": "n", "instruction": "Classify the tone.", "is_classification": True,
                               "instances": [{"input": "I love it", "output": "positive"},
                                             {"input": "Awful", "output": "negative"}]}) + "\n")
    from pipeline.importer import import_file
    from pipeline.store import Dataset
    m = import_file(src, tmp_path / "ds", run_id="r")
    rows = list(Dataset(tmp_path / "ds").iter_rows())
    assert m["rows_out"] == 2 and {r["origin"] for r in rows} == {"seed"}
    assert all(r["is_classification"] for r in rows)


def _distill(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_user_errors_are_one_line_with_exit_codes(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[{]")
    res = _distill("import", str(bad), "--out", str(tmp_path / "o"))
    assert res.returncode == 3
    assert res.stderr.strip().count("\n") == 0 and "invalid JSON at line 1" in res.stderr
    assert "Traceback" not in res.stderr
    res = _distill("inspect", str(tmp_path / "nothing"))
    assert res.returncode == 3 and "no such dataset folder" in res.stderr
    cfg = tmp_path / "c.toml"
    cfg.write_text("[teacher]\nbackend = 'nope'\n")
    res = _distill("config", "show", "--config", str(cfg))
    assert res.returncode == 2 and "teacher.backend" in res.stderr
    res = _distill("--debug", "inspect", str(tmp_path / "nothing"))
    assert "Traceback" in res.stderr


def test_unknown_option_is_a_usage_error_not_a_traceback(tmp_path):
    res = _distill("import", str(tmp_path / "x.jsonl"), "--no-such-flag")
    assert res.returncode == 2
    assert "No such option: --no-such-flag" in res.stderr and "Traceback" not in res.stderr
    res = _distill("no-such-command")
    assert res.returncode == 2 and "Traceback" not in res.stderr


def test_file_with_no_valid_row_is_an_error(tmp_path):
    src = tmp_path / "x.jsonl"
    src.write_text('{"text": "no instruction here"}\n')
    res = runner.invoke(app, ["import", str(src), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0
    assert "no valid row" in str(res.exception)


def test_config_init_show(tmp_path):
    p = tmp_path / "distill.toml"
    assert runner.invoke(app, ["config", "init", str(p)]).exit_code == 0
    assert runner.invoke(app, ["config", "init", str(p)]).exit_code != 0  # refuses to overwrite
    res = runner.invoke(app, ["config", "show", "--config", str(p)])
    assert res.exit_code == 0 and 'backend = "llamacpp"' in res.output


@pytest.mark.realdata
def test_import_dolly(shared_data, tmp_path):
    res = runner.invoke(app, ["import", str(shared_data / "dolly_3k.json"), "--out", str(tmp_path / "dolly")])
    assert res.exit_code == 0, res.output
    info = json.loads(runner.invoke(app, ["inspect", str(tmp_path / "dolly"), "--json"]).output)
    assert info["rows"] == 2996 and info["rejected_rows"] == 0
    kinds = {r["task_kind"] for r in info["sample"]}
    assert kinds <= {"general_qa", "open_qa", "closed_qa", "classification", "brainstorming",
                     "information_extraction", "summarization", "creative_writing"}
