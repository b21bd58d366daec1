"""Export: shards that `datasets` loads with `messages` as TRL expects, card, checksums, tiers, held-out split."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.records import build_messages, new_row
from pipeline.stages.export.config import ExportConfig
from pipeline.stages.export.stage import run_export
from pipeline.store import DatasetError, DatasetWriter


def make_pool(path, n, *, with_messages=True, system_every=0):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        system = "You are a careful assistant." if system_every and i % system_every == 0 else None
        r = new_row(f"Question number {i}?", "", f"Answer number {i}.", origin=["seed", "orca", "evol:deepening"][i % 3],
                    score=float(rng.integers(1, 37)), teacher_model="smollm2-135m-instruct", teacher_backend="openai",
                    system=system)
        r["messages"] = build_messages(r["instruction"], "", r["output"], system) if with_messages else None
        rows.append(r)
    w = DatasetWriter(path, "select")
    for k in range(0, n, 40):
        w.write_shard(k // 40, rows[k:k + 40])
    w.write_manifest(input=None)
    return rows


def load(out, split="train"):
    import datasets
    files = sorted(str(p) for p in out.glob(f"{split}-*.parquet"))
    return datasets.load_dataset("parquet", data_files={split: files})[split]


def assert_trl_conversational(example):
    """What TRL's SFTTrainer takes as a conversational example: a list of {role, content} ending with the answer."""
    msgs = example["messages"]
    assert isinstance(msgs, list) and len(msgs) >= 2
    for m in msgs:
        assert set(m) == {"role", "content"} and isinstance(m["content"], str) and m["content"]
        assert m["role"] in ("system", "user", "assistant")
    assert msgs[-1]["role"] == "assistant" and msgs[-2]["role"] == "user"


def test_release_loads_with_datasets_and_messages_are_trl_chats(tmp_path):
    rows = make_pool(tmp_path / "sel", 150, system_every=7)
    m = run_export(tmp_path / "sel", tmp_path / "rel", ExportConfig(rows_per_shard=40), progress=False)
    names = sorted(p.name for p in (tmp_path / "rel").glob("*.parquet"))
    assert names == [f"train-{i:05d}-of-00004.parquet" for i in range(4)]
    ds = load(tmp_path / "rel")
    assert ds.num_rows == 150 and ds.column_names[0] == "messages"
    for ex in ds:
        assert_trl_conversational(ex)
    by_id = {r["id"]: r for r in rows}
    ex = ds[0]
    assert ex["messages"] == build_messages(by_id[ex["id"]]["instruction"], "", by_id[ex["id"]]["output"],
                                           by_id[ex["id"]]["system"])
    assert {"origin", "score", "quality", "teacher_model", "prompt_hash", "parent_id"} <= set(ds.column_names)
    assert m["splits"] == {"train": 150} and m["sources"] == {"seed": 50, "orca": 50, "evol:deepening": 50}


def test_manifest_checksums_card_header_and_atomic_layout(tmp_path):
    make_pool(tmp_path / "sel", 90)
    m = run_export(tmp_path / "sel", tmp_path / "rel", ExportConfig(rows_per_shard=50, license="cc-by-4.0"), progress=False)
    rel = tmp_path / "rel"
    on_disk = json.loads((rel / "manifest.json").read_text())
    assert on_disk["files"] == m["files"] and sum(f["rows"] for f in m["files"]) == 90
    for f in m["files"]:
        assert hashlib.sha256((rel / f["path"]).read_bytes()).hexdigest() == f["sha256"]
        assert (rel / f["path"]).stat().st_size == f["bytes"]
    import pyarrow.parquet as pq
    meta = pq.ParquetFile(rel / m["files"][0]["path"]).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    text = (rel / "README.md").read_text()
    header = yaml.safe_load(text.split("---\n")[1])
    assert header["license"] == "cc-by-4.0" and header["size_categories"] == ["n<1K"]
    assert header["configs"][0]["data_files"] == [{"split": "train", "path": "train-*.parquet"}]
    assert header["dataset_info"]["splits"][0]["num_examples"] == 90
    assert "| seed | 30 |" in text and "smollm2-135m-instruct" in text and "load_dataset(" in text
    assert not [p for p in rel.iterdir() if ".tmp-" in p.name]


def test_best_rows_first_and_heldout_split_is_deterministic(tmp_path):
    rows = make_pool(tmp_path / "sel", 120)
    cfg = ExportConfig(rows=50, heldout=10, rows_per_shard=100)
    m = run_export(tmp_path / "sel", tmp_path / "a", cfg, seed=3, progress=False)
    train, test = load(tmp_path / "a"), load(tmp_path / "a", "test")
    assert (train.num_rows, test.num_rows) == (40, 10) and m["splits"] == {"train": 40, "test": 10}
    best = sorted(rows, key=lambda r: (-r["score"], r["id"]))[:50]
    assert set(train["id"]) | set(test["id"]) == {r["id"] for r in best}
    run_export(tmp_path / "sel", tmp_path / "b", cfg, seed=3, progress=False)
    assert set(load(tmp_path / "b", "test")["id"]) == set(test["id"])
    run_export(tmp_path / "sel", tmp_path / "c", cfg, seed=4, progress=False)
    assert set(load(tmp_path / "c", "test")["id"]) != set(test["id"])


def test_tier_bigger_than_the_pool_is_a_clear_error(tmp_path):
    make_pool(tmp_path / "sel", 30)
    with pytest.raises(DatasetError, match=r"tier 100k \(100,000 rows\) asked for, but only 30 rows are available"):
        run_export(tmp_path / "sel", tmp_path / "rel", ExportConfig(tier="100k"), progress=False)
    assert not (tmp_path / "rel" / "manifest.json").exists()
    res = subprocess.run([sys.executable, "-m", "pipeline.cli", "export", str(tmp_path / "sel"), "--tier", "100k",
                          "--out", str(tmp_path / "rel"), "--workdir", str(tmp_path / "w")],
                         capture_output=True, text=True)
    assert res.returncode == 3 and "only 30 rows are available" in res.stderr and "--rows 30" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    with pytest.raises(DatasetError, match="31 rows asked for"):
        run_export(tmp_path / "sel", tmp_path / "rel", ExportConfig(rows=31), progress=False)


def test_cli_export_default_is_every_row_and_reexport_replaces_old_shards(tmp_path):
    make_pool(tmp_path / "sel", 60)
    out = tmp_path / "rel"
    res = CliRunner().invoke(app, ["export", str(tmp_path / "sel"), "--out", str(out), "--rows-per-shard", "20",
                                   "--workdir", str(tmp_path / "w"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "export: 60 of 60 rows (train 60) in 3 shard(s)" in res.output
    res = CliRunner().invoke(app, ["export", str(tmp_path / "sel"), "--out", str(out), "--rows", "25",
                                   "--heldout", "0.2", "--workdir", str(tmp_path / "w"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.glob("*.parquet")) == ["test-00000-of-00001.parquet", "train-00000-of-00001.parquet"]
    assert load(out).num_rows == 20 and load(out, "test").num_rows == 5


def test_missing_messages_are_built_and_rows_without_answers_are_not_released(tmp_path):
    rows = make_pool(tmp_path / "sel", 10, with_messages=False)
    w = DatasetWriter(tmp_path / "sel2", "select")
    rows[0]["output"] = ""
    w.write_shard(0, rows)
    w.write_manifest()
    m = run_export(tmp_path / "sel2", tmp_path / "rel", ExportConfig(), progress=False)
    assert m["rows"] == 9 and m["available_rows"] == 9 and m["rows_in"] == 10
    for ex in load(tmp_path / "rel"):
        assert_trl_conversational(ex)


def test_config_validation(tmp_path):
    with pytest.raises(ValueError, match="tier or rows"):
        ExportConfig(tier="1m", rows=5)
    with pytest.raises(ValueError, match="heldout"):
        ExportConfig(heldout=1.5)
    with pytest.raises(ValueError, match="unknown columns"):
        ExportConfig(columns=["messages", "nope"])
    assert ExportConfig(columns=["id", "messages"]).columns == ["messages", "id"]


def test_distill_run_from_score_ends_with_a_release_of_every_selected_row(tmp_path):
    """The plan's last three steps with no config: score (heuristic), select (MiniLM), export (all rows)."""
    from pipeline.config import load_config
    from pipeline.context import resolve_run
    from pipeline.runplan import run_plan

    make_pool(tmp_path / "pool", 12)
    cfg = load_config(None, {"run": {"workdir": str(tmp_path / "w")}})
    paths = resolve_run(cfg, tmp_path / "w", "r1")
    summary = run_plan(cfg, paths, start="score", input=tmp_path / "pool", progress=False, echo=lambda s: None)
    steps = {s["stage"]: s for s in summary["steps"]}
    assert steps["score"]["status"] == steps["select"]["status"] == steps["export"]["status"] == "done"
    release = paths.stage_dir("export")
    manifest = json.loads((release / "manifest.json").read_text())
    assert summary["final_dataset"] == str(release)
    assert summary["final_rows"] == manifest["rows"] == steps["select"]["rows_out"] > 0
    assert manifest["request"] == {"tier": None, "rows": None}
    for ex in load(release):
        assert_trl_conversational(ex)


def _split_ids(out):
    import pyarrow.parquet as pq
    return {split: {i for f in sorted(out.glob(f"{split}-*.parquet")) for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()}
            for split in ("train", "test")}


def test_stable_heldout_keeps_every_row_in_its_split_as_the_pool_grows(tmp_path):
    rows = make_pool(tmp_path / "big", 400)
    w = DatasetWriter(tmp_path / "small", "select")   # last night's pool: the first 200 rows
    w.write_shard(0, rows[:200])
    w.write_manifest(input=None)
    cfg = ExportConfig(heldout=0.25, heldout_stable=True)
    m1 = run_export(tmp_path / "small", tmp_path / "v1", cfg, seed=3, progress=False)
    m2 = run_export(tmp_path / "big", tmp_path / "v2", cfg, seed=3, progress=False)
    s1, s2 = _split_ids(tmp_path / "v1"), _split_ids(tmp_path / "v2")
    assert s1["test"] <= s2["test"] and s1["train"] <= s2["train"]    # nothing moved between splits
    assert 0.15 < m2["splits"]["test"] / 400 < 0.35 and m2["splits"]["test"] == len(s2["test"])
    assert m1["splits"]["test"] == len(s1["test"]) > 0
    with pytest.raises(ValueError, match="give heldout as a share"):
        ExportConfig(heldout=10, heldout_stable=True)
