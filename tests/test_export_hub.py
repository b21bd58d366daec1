"""Export as the Hub and trainers expect: the card's dataset_info against what `datasets` computes, licence
fields for `license: other`, and the prompt/completion format composed with each reasoning format and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.records import new_row
from pipeline.stages.export.config import ExportConfig
from pipeline.stages.export.stage import run_export
from pipeline.store import DatasetError, DatasetWriter

datasets = pytest.importorskip("datasets")


def make_pool(path, n=70):
    rows = []
    for i in range(n):
        system = "Answer step by step." if i % 4 == 0 else None
        r = new_row(f"Task {i}: add {i} and {i * 3}.", "" if i % 5 else f"context {i}", f"It is {i * 4}.",
                    origin=["seed", "orca"][i % 2], score=float(i % 9) if i % 7 else None,
                    teacher_model="teacher-a", teacher_backend="fake", system=system,
                    reasoning=f"{i} plus {i * 3} makes {i * 4}" if i % 3 else None, flags=["short"] if i % 6 == 0 else [])
        if system:
            r["messages"] = [{"role": "system", "content": system}] + r["messages"]
        rows.append(r)
    w = DatasetWriter(path, "select")
    for k in range(0, n, 30):
        w.write_shard(k // 30, rows[k:k + 30])
    w.write_manifest(input=None)
    return {r["id"]: r for r in rows}


def header(rel):
    return yaml.safe_load((rel / "README.md").read_text().split("---\n")[1])


def computed_info(rel, splits, tmp_path):
    """The DatasetInfo `datasets` computes when it prepares the release's Parquet files (card not read)."""
    builder = datasets.load_dataset_builder(
        "parquet", data_files={s: sorted(str(p) for p in rel.glob(f"{s}-*.parquet")) for s in splits},
        cache_dir=str(tmp_path / "cache"))
    builder.download_and_prepare()
    return builder.info


@pytest.mark.parametrize("fmt", ["messages", "prompt_completion"])
def test_card_dataset_info_is_what_datasets_computes(tmp_path, fmt):
    make_pool(tmp_path / "sel")
    rel = tmp_path / "rel"
    m = run_export(tmp_path / "sel", rel, ExportConfig(rows_per_shard=25, heldout=12, format=fmt), progress=False)
    assert m["splits"] == {"train": 58, "test": 12} and len(m["files"]) == 4
    info = header(rel)["dataset_info"]
    want = computed_info(rel, m["splits"], tmp_path)

    assert info["features"] == want.features._to_yaml_list()
    assert datasets.Features._from_yaml_list(info["features"]) == want.features
    assert {s["name"]: (s["num_examples"], s["num_bytes"]) for s in info["splits"]} == {
        name: (s.num_examples, s.num_bytes) for name, s in want.splits.items()}
    assert info["download_size"] == want.download_size == sum((rel / f["path"]).stat().st_size for f in m["files"])
    assert info["dataset_size"] == want.dataset_size
    # num_bytes is the Arrow size, not the Parquet size the card once carried
    assert info["splits"][0]["num_bytes"] != sum(f["bytes"] for f in m["files"] if f["split"] == "train")

    # `datasets` reads the card's dataset_info as its own: the same DatasetInfo, and the folder loads under it
    card = datasets.info.DatasetInfosDict.from_dataset_card_data(
        {"dataset_info": info, "configs": header(rel)["configs"]})["default"]
    for field in ("features", "download_size", "dataset_size"):
        assert getattr(card, field) == getattr(want, field), field
    assert {k: (v.num_bytes, v.num_examples) for k, v in card.splits.items()} == {
        k: (v.num_bytes, v.num_examples) for k, v in want.splits.items()}
    loaded = datasets.load_dataset(str(rel), cache_dir=str(tmp_path / "cache2"), verification_mode="all_checks")
    assert loaded["train"].features == want.features and loaded["test"].num_rows == 12


def test_license_other_has_name_and_link_and_a_licence_file(tmp_path):
    make_pool(tmp_path / "sel", 20)
    rel = tmp_path / "rel"
    m = run_export(tmp_path / "sel", rel, ExportConfig(), progress=False)
    h = header(rel)
    assert (h["license"], h["license_name"], h["license_link"]) == ("other", "teacher-terms", "LICENSE.md")
    assert m["license_name"] == "teacher-terms" and m["license_link"] == "LICENSE.md"
    assert "`teacher-a`" in (rel / "LICENSE.md").read_text()

    m = run_export(tmp_path / "sel", rel, ExportConfig(license_name="acme-1.0", license_link="https://acme.test/terms"),
                   progress=False)
    h = header(rel)
    assert (h["license_name"], h["license_link"]) == ("acme-1.0", "https://acme.test/terms")
    assert not (rel / "LICENSE.md").exists()  # the link is the user's; the earlier export's file is gone

    run_export(tmp_path / "sel", rel, ExportConfig(license="apache-2.0"), progress=False)
    h = header(rel)
    assert h["license"] == "apache-2.0" and "license_name" not in h and "license_link" not in h
    with pytest.raises(ValueError, match="license = other"):
        ExportConfig(license="mit", license_name="x")
    with pytest.raises(ValueError, match="plain file name"):
        ExportConfig(license_link="../LICENSE")


@pytest.mark.parametrize("reasoning", ["field", "think_tags", "answer_only"])
def test_prompt_completion_splits_at_the_answer_and_composes_with_each_reasoning_format(tmp_path, reasoning):
    rows = make_pool(tmp_path / "sel")
    rel = tmp_path / "rel"
    m = run_export(tmp_path / "sel", rel, ExportConfig(format="prompt_completion", reasoning=reasoning,
                                                       columns=["messages", "id", "score"]), progress=False)
    want_cols = ["prompt", "completion"] + (["reasoning"] if reasoning == "field" else []) + ["id", "score"]
    assert m["columns"] == want_cols and m["format"] == "prompt_completion"
    assert m["reasoning"]["format"] == reasoning and m["reasoning"]["rows_with_reasoning"] == 46
    ds = datasets.load_dataset(str(rel), split="train")
    assert ds.column_names == want_cols
    for ex in ds:
        r = rows[ex["id"]]
        full = r["messages"]
        assert ex["prompt"] == full[:-1] and [t["role"] for t in ex["prompt"]][-1] == "user"
        assert len(ex["completion"]) == 1 and ex["completion"][0]["role"] == "assistant"
        answer = ex["completion"][0]["content"]
        if reasoning == "think_tags" and r["reasoning"]:
            assert answer == f"<think>\n{r['reasoning']}\n</think>\n\n{r['output']}"
        else:
            assert answer == r["output"]
        if reasoning == "field":
            assert ex["reasoning"] == r["reasoning"]
    text = (rel / "README.md").read_text()
    assert "Format: **prompt_completion**" in text and 'ds["train"][0]["completion"]' in text
    assert [f["name"] for f in header(rel)["dataset_info"]["features"]][:2] == ["prompt", "completion"]


def test_cli_format_flag_and_a_bad_value_is_a_config_error(tmp_path):
    make_pool(tmp_path / "sel", 20)
    out = tmp_path / "rel"
    base = ["export", str(tmp_path / "sel"), "--out", str(out), "--workdir", str(tmp_path / "w"), "--no-progress"]
    res = CliRunner().invoke(app, base + ["--format", "prompt_completion"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "prompt_completion" and manifest["config"]["format"] == "prompt_completion"
    res = subprocess.run([sys.executable, "-m", "pipeline.cli", *base, "--format", "sharegpt"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "[export] format" in res.stderr and "Traceback" not in res.stderr, res.stderr
    res = CliRunner().invoke(app, base)  # the default is unchanged
    assert res.exit_code == 0 and json.loads((out / "manifest.json").read_text())["columns"][0] == "messages"


def test_a_chat_without_a_final_answer_turn_is_a_one_line_data_error_in_prompt_completion(tmp_path):
    rows = list(make_pool(tmp_path / "sel", 6).values())
    rows[2]["messages"] = rows[2]["messages"][:-1]  # ends with the user turn: nothing to split off
    w = DatasetWriter(tmp_path / "sel2", "select")
    w.write_shard(0, rows)
    w.write_manifest(input=None)
    run_export(tmp_path / "sel2", tmp_path / "ok", ExportConfig(), progress=False)  # messages format: as it is
    with pytest.raises(DatasetError, match=f"row {rows[2]['id']}: .*--format messages"):
        run_export(tmp_path / "sel2", tmp_path / "rel", ExportConfig(format="prompt_completion"), progress=False)
