"""`distill run` and `distill refresh` validate every planned stage before the first one starts.

A typo in the last section ([export]), or a file a later stage's section names
(a decontamination file, an --against dataset, a strategy map ...), must fail
with one line and exit 2 (or 3 for a file that is there but unreadable) before
any stage folder is written and before the teacher is asked anything. The
teacher is a loopback server that counts requests, or a port nobody listens on
(an unvalidated run would then stop at the first teacher call with exit 4).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from faultserver import FaultServer

from pipeline import records
from pipeline.config import load_config
from pipeline.context import RunPaths
from pipeline.errors import ConfigError, InputFileError, TeacherUnavailable, exit_code_for
from pipeline.refresh.run import refresh
from pipeline.runplan import run_plan
from pipeline.store import DatasetWriter

ROOT = Path(__file__).resolve().parent.parent


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"  # closed again: connection refused


def _config(tmp_path: Path, url: str, extra: str = "") -> Path:
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"instruction": f"Say the number {i}.", "is_classification": False,
                                         "instances": [{"input": "", "output": str(i)}]}) + "\n"
                             for i in range(4)))
    conf = tmp_path / "distill.toml"
    conf.write_text(f"""
[run]
workdir = "{tmp_path / 'work'}"
run_id = "r1"
shard_rows = 5
[teacher]
backend = "openai"
base_url = "{url}"
model = "fault-model"
max_retries = 0
concurrency = 2
[self_instruct]
seeds = "{seeds}"
num_instructions = 2
request_batch_size = 1
num_prompt_instructions = 2
num_machine_instructions = 0
last_item = 5
[evol_instruct]
rounds = 1
[refresh]
publish_dir = "{tmp_path / 'release'}"
{extra}
""")
    return conf


def _stage_folders(tmp_path: Path) -> list[str]:
    run = tmp_path / "work" / "r1"
    return sorted(p.name for p in run.iterdir() if p.is_dir()) if run.is_dir() else []


def _run(tmp_path: Path, sections: dict, **kw) -> None:
    """run_plan on the base config with `sections` ({section: {key: value}}) on top."""
    cfg = load_config(_config(tmp_path, _dead_url()), sections)
    run_plan(cfg, RunPaths(tmp_path / "work", "r1"), progress=False, echo=lambda s: None, **kw)


def test_export_typo_fails_at_once_with_one_line_and_no_teacher_call(tmp_path):
    with FaultServer() as srv:
        conf = _config(tmp_path, srv.base_url, "[export]\ntierr = \"100k\"\n")
        res = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "-c", str(conf), "--no-progress",
                              "--no-report"], capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert res.returncode == 2, res.stderr
        errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
        assert errors == [f"error: {conf}: [export] tierr: Extra inputs are not permitted"], res.stderr
        assert "Traceback" not in res.stderr
        assert sum(srv.received.values()) == 0   # not one teacher request, not even a ping
    assert _stage_folders(tmp_path) == []


def test_every_bad_section_is_named_at_once(tmp_path):
    with pytest.raises(ConfigError) as e:
        _run(tmp_path, {"orca": {"max_tokenz": 5}, "export": {"rows": -1}})
    lines = str(e.value).splitlines()
    assert len(lines) == 2 and "[orca] max_tokenz: Extra inputs" in lines[0], lines
    assert "[export] rows: Input should be greater than 0" in lines[1], lines
    assert _stage_folders(tmp_path) == []


@pytest.mark.parametrize("section, key, value, error, says", [
    ("self_instruct", "seeds", "{tmp}/no-seeds.jsonl", ConfigError, "[self_instruct] seeds: {tmp}/no-seeds.jsonl: no such file"),
    ("orca", "strategy_map_file", "{tmp}/map.toml", ConfigError, "[orca] strategy_map_file: {tmp}/map.toml: no such file"),
    ("orca", "system_messages", "orca/nope.toml", Exception, "catalog 'orca/nope.toml'"),
    ("minhash", "against", ["{tmp}/release"], ConfigError, "[minhash] against: {tmp}/release: no such folder"),
    ("semdedup", "against", "{tmp}/release", ConfigError, "[semdedup] against: {tmp}/release: no such folder"),
    ("semdedup", "model", "./models/nope", ConfigError, "[semdedup] model: ./models/nope: no such folder"),
    ("score", "decontaminate", ["{tmp}/mmlu.jsonl"], ConfigError, "[score] decontaminate: {tmp}/mmlu.jsonl: no such file"),
    ("score", "decontaminate", ["{tmp}/bad.jsonl"], InputFileError, "{tmp}/bad.jsonl:1: not valid JSON"),
    ("select", "against", "{tmp}/seeds.jsonl", ConfigError, "[select] against: {tmp}/seeds.jsonl: a file, not a folder"),
    ("select", "embeddings", "{tmp}/e.npy", ConfigError, "[select] embeddings: {tmp}/e.npy: no such file"),
])
def test_a_file_a_later_stage_names_is_checked_before_the_first_stage(tmp_path, section, key, value, error, says):
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    value = [v.format(tmp=tmp_path) for v in value] if isinstance(value, list) else value.format(tmp=tmp_path)
    with pytest.raises(error) as e:
        _run(tmp_path, {section: {key: value}})
    assert not isinstance(e.value, TeacherUnavailable)  # the unvalidated run reaches the teacher and stops there
    assert exit_code_for(e.value) in (2, 3)
    assert says.format(tmp=tmp_path) in str(e.value) and "\n" not in str(e.value)
    assert _stage_folders(tmp_path) == []


def test_against_an_unfinished_dataset_is_refused_first(tmp_path):
    w = DatasetWriter(tmp_path / "release", "export")
    w.write_shard(0, [records.new_row("a task", origin="seed")])  # no manifest: a release killed mid-write
    with pytest.raises(Exception) as e:
        _run(tmp_path, {"semdedup": {"against": str(tmp_path / "release")}})
    assert exit_code_for(e.value) == 3 and str(tmp_path / "release") in str(e.value)
    assert _stage_folders(tmp_path) == []


def test_skipped_stages_need_not_be_valid(tmp_path):
    """A broken [export] and [score] do not stop a run that skips them: it goes on to the teacher."""
    bad = {"export": {"tierr": "100k"}, "score": {"decontaminate": ["/nowhere/mmlu.jsonl"]}}
    with pytest.raises(TeacherUnavailable):
        _run(tmp_path, bad, skip=["score", "export"])
    with pytest.raises(TeacherUnavailable):   # --from: the stages before it are not run, nor checked
        _run(tmp_path, {"self_instruct": {"seeds": "/nowhere/seeds.jsonl"}}, start="evol_instruct",
             input=_dataset(tmp_path / "in"))


def test_a_finished_step_is_not_checked_against_files_it_no_longer_reads(tmp_path):
    """Its seed file gone after self_instruct finished: the resumed run goes on to evol_instruct."""
    _dataset(RunPaths(tmp_path / "work", "r1").stage_dir("self_instruct"))
    with pytest.raises(TeacherUnavailable):
        _run(tmp_path, {"self_instruct": {"seeds": "/nowhere/seeds.jsonl"}})
    with pytest.raises(ConfigError, match=r"\[self_instruct\] typo"):  # its section is still checked
        _run(tmp_path, {"self_instruct": {"typo": 1}})


def test_refresh_validates_every_stage_before_the_lock_and_the_run_folder(tmp_path):
    cfg = load_config(_config(tmp_path, _dead_url()), {"score": {"decontaminate": ["/nowhere/mmlu.jsonl"]}})
    with pytest.raises(ConfigError, match=r"\[score\] decontaminate: /nowhere/mmlu.jsonl: no such file"):
        refresh(cfg, progress=False, echo=lambda s: None)
    assert not (tmp_path / "release").exists()
    assert not list((tmp_path / "work").glob("refresh-*"))


def _dataset(path: Path) -> Path:
    w = DatasetWriter(path, "self_instruct")
    w.write_shard(0, [records.new_row(f"Say the number {i}.", origin="self_instruct") for i in range(3)])
    w.write_manifest()
    return path
