"""Never lose a row on the store side: unfinished inputs are refused, `--out` never clobbers, one writer per folder.

Everything goes through the real CLI (`python -m pipeline.cli` in a subprocess, so the exit codes and the
one-line errors are the ones a user and cron see) over real Parquet folders.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.importer import import_file
from pipeline.store import Dataset, DatasetWriter

HOLD = """
import sys, time
from pipeline.store.lock import RunLock
RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(60)
"""


def distill(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


def one_line(res) -> str:
    err = res.stderr.strip()
    assert "Traceback" not in err, err
    assert err.count("\n") == 0, err
    return err


def rows_file(path: Path, n: int, tag: str = "") -> Path:
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"instruction": f"Explain item {tag}{i} in a few words, please.",
                                "output": f"Item {tag}{i} is a small example used by the test, nothing more."}) + "\n")
    return path


def finished(tmp_path: Path, n: int = 30, name: str = "src") -> Path:
    out = tmp_path / name
    import_file(rows_file(tmp_path / f"{name}.jsonl", n, name), out, run_id="t", shard_rows=10)
    return out


def unfinished(tmp_path: Path, stage: str, name: str = "partial", shards: int = 2) -> Path:
    """A folder as a killed `stage` leaves it: shards with done markers, no manifest."""
    src = finished(tmp_path, 10 * shards, name + "_rows")
    rows = list(Dataset(src).iter_rows())
    out = tmp_path / name
    w = DatasetWriter(out, stage, plan={"input": str(tmp_path / "upstream")})
    for k in range(shards):
        w.write_shard(k, rows[10 * k: 10 * (k + 1)])
    del w  # a dropped writer releases the folder's lock
    return out


def listing(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


# -- 1. inputs must be finished -------------------------------------------------------------------------------

@pytest.mark.parametrize("command,upstream", [("score", "orca"), ("select", "score"), ("export", "select"),
                                              ("minhash", "orca")])
def test_every_stage_refuses_an_unfinished_input_naming_its_stage(tmp_path, command, upstream):
    src = unfinished(tmp_path, upstream)
    res = distill(command, src, "--out", tmp_path / "out", "--workdir", tmp_path / "w")
    assert res.returncode == 3, res.stderr
    line = one_line(res)
    assert f"unfinished `{upstream}` output" in line and f"distill {upstream}" in line and "--allow-partial" in line
    assert not (tmp_path / "out" / "_manifest.json").exists() and not (tmp_path / "out" / "manifest.json").exists()


def test_orca_calibrate_refuses_an_unfinished_input_before_asking_the_teacher(tmp_path):
    src = unfinished(tmp_path, "import")
    res = distill("orca", "calibrate", src, "--out", tmp_path / "map.toml", "--workdir", tmp_path / "w")
    assert res.returncode == 3, res.stderr
    assert "unfinished `import` output" in one_line(res) and not (tmp_path / "map.toml").exists()


def test_score_after_kill_chain_is_refused_and_allow_partial_is_recorded(tmp_path):
    orca = unfinished(tmp_path, "orca", shards=3)
    res = distill("score", orca, "--out", tmp_path / "score", "--workdir", tmp_path / "w")
    assert res.returncode == 3 and "unfinished `orca` output" in one_line(res)
    res = distill("score", orca, "--out", tmp_path / "score", "--workdir", tmp_path / "w", "--allow-partial")
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "score" / "_manifest.json").read_text())
    assert m["allow_partial"] is True and m["input_shards_complete"] == 3 and m["rows_in"] == 30
    # the input goes on (the killed orca resumed and finished): its fingerprint changed, the resume is refused
    w = DatasetWriter(orca, "orca", plan={"input": str(tmp_path / "upstream")})
    w.write_manifest()
    res = distill("score", orca, "--out", tmp_path / "score", "--workdir", tmp_path / "w")
    assert res.returncode == 3 and "changed since this folder was started" in one_line(res)
    res = distill("score", orca, "--out", tmp_path / "score", "--workdir", tmp_path / "w", "--overwrite")
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "score" / "_manifest.json").read_text())
    assert "allow_partial" not in m and m["rows_in"] == 30
    assert list((tmp_path / "score" / ".stale").iterdir())  # the partial scoring was moved aside, not deleted


def test_a_stray_shard_without_its_done_marker_is_not_read(tmp_path):
    src = finished(tmp_path, 20)
    before = Dataset(src).num_rows()
    (src / "part-00009.parquet").write_bytes((src / "part-00000.parquet").read_bytes())
    ds = Dataset(src)
    assert ds.num_rows() == before and ds.unmarked == ["part-00009.parquet"]
    res = distill("inspect", src, "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["rows"] == before
    res = distill("inspect", src, "--rows", "0")
    assert "1 shard(s) without a done marker (not data): part-00009.parquet" in res.stdout


def test_corrupt_done_marker_or_plan_on_resume_is_one_line(tmp_path):
    w_args = ("score", finished(tmp_path, 10, "in"), "--out", tmp_path / "s", "--workdir", tmp_path / "w")
    assert distill(*w_args).returncode == 0
    (tmp_path / "s" / "_done" / "part-00000.json").write_text("{not json")
    res = distill(*w_args)
    assert res.returncode == 3
    line = one_line(res)
    assert "part-00000.json: corrupt" in line and "--overwrite" in line
    (tmp_path / "s" / "_plan.json").write_bytes(b"\xff\xfe")
    res = distill(*w_args)
    assert res.returncode == 3 and "_plan.json: corrupt" in one_line(res)


def test_a_shard_with_a_corrupt_body_and_intact_footer_is_one_line(tmp_path):
    src = finished(tmp_path, 40)
    shard = src / "part-00000.parquet"
    import pyarrow.parquet as pq
    col = pq.ParquetFile(shard).metadata.row_group(0).column(0)  # the `id` column's pages, not the footer
    start = col.dictionary_page_offset or col.data_page_offset
    data = bytearray(shard.read_bytes())
    for i in range(start + 16, start + col.total_compressed_size):
        data[i] ^= 0x5A
    shard.write_bytes(bytes(data))
    ds = Dataset(src)  # the footer is intact: it opens
    from pipeline.errors import DatasetError
    with pytest.raises(DatasetError, match="part-00000.parquet: unreadable Parquet shard"):
        list(ds.iter_batches())
    with pytest.raises(DatasetError, match="part-00000.parquet: unreadable Parquet shard"):
        ds.plan(10)[0].read()
    res = distill("score", src, "--out", tmp_path / "s", "--workdir", tmp_path / "w")
    assert res.returncode == 3 and "part-00000.parquet: unreadable Parquet shard" in one_line(res)


# -- 2. --out never clobbers ----------------------------------------------------------------------------------

def test_import_onto_a_finished_stage_folder_is_refused(tmp_path):
    src = finished(tmp_path, 20)
    res = distill("score", src, "--out", tmp_path / "s", "--workdir", tmp_path / "w")
    assert res.returncode == 0, res.stderr
    before = listing(tmp_path / "s")
    res = distill("import", rows_file(tmp_path / "other.jsonl", 5), "--out", tmp_path / "s")
    assert res.returncode == 3 and "holds a finished `score` dataset" in one_line(res)
    assert listing(tmp_path / "s") == before
    res = distill("import", tmp_path / "other.jsonl", "--out", tmp_path / "s", "--overwrite")
    assert res.returncode == 0, res.stderr
    assert Dataset(tmp_path / "s").num_rows() == 5
    (kept,) = (tmp_path / "s" / ".stale").iterdir()
    assert Dataset(kept).manifest()["stage"] == "score" and Dataset(kept).num_rows() == 20


def test_importing_a_folders_own_shard_into_it_touches_nothing(tmp_path):
    src = finished(tmp_path, 20)
    before = listing(src)
    res = distill("import", src / "part-00000.parquet", "--out", src)
    assert res.returncode == 3 and "inside the output folder" in one_line(res)
    assert listing(src) == before
    res = distill("score", src, "--out", src, "--workdir", tmp_path / "w")
    assert res.returncode == 3 and "inside the output folder" in one_line(res)
    assert listing(src) == before


def test_export_into_a_users_folder_is_refused_and_overwrite_moves_it_aside(tmp_path):
    src = finished(tmp_path, 20)
    user = tmp_path / "mine"
    user.mkdir()
    (user / "README.md").write_text("my own notes\n")
    (user / "train.csv").write_text("a,b\n")
    res = distill("export", src, "--out", user, "--workdir", tmp_path / "w")
    assert res.returncode == 3 and "did not write (README.md, train.csv)" in one_line(res)
    assert (user / "README.md").read_text() == "my own notes\n" and sorted(os.listdir(user)) == ["README.md", "train.csv"]
    res = distill("export", src, "--out", user, "--workdir", tmp_path / "w", "--overwrite")
    assert res.returncode == 0, res.stderr
    (kept,) = (user / ".stale").iterdir()
    assert (kept / "README.md").read_text() == "my own notes\n" and (kept / "train.csv").exists()
    # a previous release is ours: exporting again into it is fine
    res = distill("export", src, "--out", user, "--workdir", tmp_path / "w")
    assert res.returncode == 0, res.stderr


def test_a_stage_into_a_folder_of_foreign_files_is_refused(tmp_path):
    src = finished(tmp_path, 20)
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    res = distill("minhash", src, "--out", out, "--workdir", tmp_path / "w")
    assert res.returncode == 3 and "did not write (notes.txt)" in one_line(res)
    assert sorted(os.listdir(out)) == ["notes.txt"]


def test_same_import_is_a_rerun_other_settings_are_refused(tmp_path):
    a = rows_file(tmp_path / "a.jsonl", 12, "a")
    assert distill("import", a, "--out", tmp_path / "d").returncode == 0
    res = distill("import", a, "--out", tmp_path / "d")
    assert res.returncode == 0 and Dataset(tmp_path / "d").num_rows() == 12
    res = distill("import", rows_file(tmp_path / "b.jsonl", 3, "b"), "--out", tmp_path / "d")
    assert res.returncode == 3 and "was started with different settings" in one_line(res)
    assert Dataset(tmp_path / "d").num_rows() == 12


# -- 3. one writer per folder ---------------------------------------------------------------------------------

def _holder(path: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_writer_exits_6_naming_the_holder_and_a_dead_holder_is_taken_over(tmp_path):
    a = rows_file(tmp_path / "a.jsonl", 12)
    out = tmp_path / "d"
    p = _holder(out / ".lock")
    try:
        res = distill("import", a, "--out", out)
        assert res.returncode == 6 and f"pid {p.pid}" in one_line(res)
        res = distill("score", finished(tmp_path, 10), "--out", out, "--workdir", tmp_path / "w")
        assert res.returncode == 6 and f"pid {p.pid}" in one_line(res)
    finally:
        p.kill()
        p.wait()
    res = distill("import", a, "--out", out)  # the kernel dropped the dead holder's flock
    assert res.returncode == 0, res.stderr
    assert Dataset(out).num_rows() == 12


def test_two_concurrent_writers_the_second_exits_6_and_the_first_finishes_intact(tmp_path):
    big = rows_file(tmp_path / "big.jsonl", 40_000)
    out = tmp_path / "d"
    first = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "import", str(big), "--out", str(out),
                              "--shard-rows", "100"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while True:  # until the first holds the folder's lock (its record names its pid)
            try:
                if json.loads((out / ".lock").read_text() or "{}").get("pid") == first.pid:
                    break
            except (OSError, ValueError):
                pass
            assert first.poll() is None, first.communicate()
            time.sleep(0.02)
        os.kill(first.pid, signal.SIGSTOP)  # mid-run, holding the lock, for as long as the second takes
        try:
            second = distill("import", big, "--out", out, "--shard-rows", "100")
        finally:
            os.kill(first.pid, signal.SIGCONT)
        assert second.returncode == 6 and f"pid {first.pid}" in one_line(second)
        _, err = first.communicate(timeout=300)
        assert first.returncode == 0, err
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    ds = Dataset(out, require_complete=True)
    ids = ds.read(columns=["id"]).column("id").to_pylist()
    assert len(ids) == 40_000 and len(set(ids)) == 40_000


def test_distill_run_takes_its_run_lock(tmp_path):
    p = _holder(tmp_path / "w" / "r1" / ".lock")
    try:
        res = distill("run", "--workdir", tmp_path / "w", "--run-id", "r1", "--no-report")
        assert res.returncode == 6
        assert f"pid {p.pid}" in res.stderr and "another `distill run`" in res.stderr
        assert not (tmp_path / "w" / "r1" / "self_instruct").exists()
    finally:
        p.kill()
        p.wait()


def test_distill_run_redoes_an_unfinished_step_whose_input_changed_since_it_started(tmp_path):
    from pipeline.config import load_config
    from pipeline.context import RunPaths
    from pipeline.runplan import run_plan
    from tests.test_runner import _input
    from tests.test_runplan import Counted

    _input(tmp_path)
    cfg, paths, c, lines = load_config(None), RunPaths(tmp_path / "work", "r1"), Counted(), []
    run = lambda: run_plan(cfg, paths, plan=c.plan(tmp_path / "in"), echo=lines.append, progress=False)  # noqa: E731
    run()
    again = paths.stage_dir("again")
    (again / "_manifest.json").unlink()  # as if killed before its manifest
    filt = paths.stage_dir("filter")  # meanwhile its input grew by a shard
    plan = json.loads((filt / "_plan.json").read_text())
    w = DatasetWriter(filt, plan["stage"], plan=plan)
    w.write_shard(99, list(Dataset(filt).iter_rows())[:2])
    w.write_manifest()
    lines.clear()
    run()
    assert any("[again] its input filter changed since it was started" in s for s in lines), lines
    (kept,) = (paths.run_dir / ".stale").iterdir()
    assert kept.name.startswith("again-") and not (kept / "_manifest.json").exists()
    assert Dataset(again, require_complete=True).manifest()["rows_in"] == Dataset(filt).num_rows()
