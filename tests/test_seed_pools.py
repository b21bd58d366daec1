"""Seed pools: the team's own pool (counts and spread), every accepted format, bad files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from pipeline import records
from pipeline.errors import InputFileError
from pipeline.stages.self_instruct.rouge import RougeIndex
from pipeline.stages.self_instruct.seeds import load_seeds, team_seeds_path
from pipeline.store import DatasetWriter


def team_lines() -> list[dict]:
    return [json.loads(line) for line in team_seeds_path().read_text(encoding="utf-8").splitlines() if line.strip()]


def test_team_pool_size_spread_and_format():
    rows = team_lines()
    assert len(rows) >= 120
    kinds = Counter(r["kind"] for r in rows)
    assert len(kinds) >= 15 and max(kinds.values()) <= len(rows) * 0.2
    share = sum(r["is_classification"] for r in rows) / len(rows)
    assert 0.12 <= share <= 0.18
    assert len({r["id"] for r in rows}) == len(rows) and len({r["name"] for r in rows}) == len(rows)
    for r in rows:
        assert set(r) == {"id", "name", "kind", "instruction", "instances", "is_classification"}
        assert isinstance(r["is_classification"], bool)
        assert len(r["instances"]) == 1 and r["instances"][0]["output"].strip()
        assert (r["kind"] == "classification") == r["is_classification"]
    pool = load_seeds()
    assert pool.format == "self_instruct_jsonl" and len(pool.tasks) == len(rows) and not pool.duplicates


def test_team_pool_is_diverse_within_itself():
    idx = RougeIndex(0.7)
    for r in team_lines():
        assert idx.most_similar(r["instruction"]) is None, r["instruction"]
        idx.add(r["instruction"])


@pytest.mark.realdata
def test_team_pool_is_not_copied_from_public_sets(shared_data):
    idx = RougeIndex(0.7)
    for line in open(shared_data / "self_instruct_seed_tasks.jsonl"):
        idx.add(json.loads(line)["instruction"])
    for name in ("dolly_3k.json", "alpaca_helpfulness_2k.json"):
        for r in json.loads((shared_data / name).read_text()):
            idx.add(r["instruction"])
    for line in open(shared_data / "wizardlm_testset_218.jsonl"):
        idx.add(json.loads(line)["Instruction"])
    for r in team_lines():
        assert idx.most_similar(r["instruction"]) is None, r["instruction"]


@pytest.mark.realdata
def test_paper_seed_file_loads(shared_data):
    pool = load_seeds(shared_data / "self_instruct_seed_tasks.jsonl")
    assert pool.format == "self_instruct_jsonl" and len(pool.tasks) == 175
    assert sum(1 for t in pool.tasks if t.is_classification) == 26
    assert sum(1 for t in pool.tasks if not t.instances[0][0]) == 50


@pytest.mark.realdata
def test_alpaca_style_json_loads_and_reports_duplicates(shared_data):
    pool = load_seeds(shared_data / "alpaca_helpfulness_2k.json")
    assert pool.format == "json" and len(pool.tasks) == 2022
    # Dolly (same Alpaca-style shape, plus a category read as the kind) repeats some instructions:
    # reported with both places, kept once
    pool = load_seeds(shared_data / "dolly_3k.json")
    assert pool.duplicates and all(d["where"].startswith("item ") for d in pool.duplicates)
    assert len(pool.tasks) + len(pool.duplicates) == len(json.loads((shared_data / "dolly_3k.json").read_text()))
    assert {t.kind for t in pool.tasks} >= {"open_qa", "classification"}


def test_plain_jsonl_and_duplicates(tmp_path: Path):
    p = tmp_path / "plain.jsonl"
    p.write_text('{"instruction": "Name a fruit.", "output": "Apple"}\n\n'
                 '{"instruction": "Add two numbers.", "input": "2, 3", "output": "5"}\n'
                 '{"instruction": "name a   FRUIT.", "output": "Pear"}\n', encoding="utf-8")
    pool = load_seeds(p)
    assert pool.format == "jsonl" and [t.instruction for t in pool.tasks] == ["Name a fruit.", "Add two numbers."]
    assert pool.tasks[1].instances == [("2, 3", "5")] and pool.tasks[0].is_classification is None
    assert pool.duplicates == [{"where": "line 4", "same_as": "line 1", "instruction": "name a   FRUIT."}]


def test_dataset_folder_groups_instances(tmp_path: Path):
    rows = [records.new_row("Name a fruit.", "", "Apple", origin="import", is_classification=False),
            records.new_row("Translate to French.", "cat", "chat", origin="import"),
            records.new_row("Translate to French.", "dog", "chien", origin="import")]
    w = DatasetWriter(tmp_path / "ds", "import")
    w.write_shard(0, rows)
    w.write_manifest()
    pool = load_seeds(tmp_path / "ds")
    assert pool.format == "dataset" and len(pool.tasks) == 2
    assert pool.tasks[1].instances == [("cat", "chat"), ("dog", "chien")] and not pool.duplicates


@pytest.mark.parametrize("body, where, what", [
    ('{"instruction": "ok", "output": "x"}\n{"instruction": "broken"\n', "line 2", "invalid JSON"),
    ('{"instruction": "ok"}\n["not", "an", "object"]\n', "line 2", "expected a JSON object"),
    ('{"output": "no instruction"}\n', "line 1", "no 'instruction' field"),
    ('{"instruction": "   "}\n', "line 1", "the instruction is empty"),
    ('{"instruction": "x y z w", "instances": []}\n', "line 1", "'instances' must be a non-empty list"),
    ('{"instruction": "x y z w", "is_classification": "yes"}\n', "line 1", "'is_classification' must be true or false"),
    ('{"instruction": 5}\n', "line 1", "field 'instruction' must be a string"),
])
def test_malformed_jsonl_names_file_and_line(tmp_path: Path, body, where, what):
    p = tmp_path / "seeds.jsonl"
    p.write_text(body, encoding="utf-8")
    with pytest.raises(InputFileError) as e:
        load_seeds(p)
    assert str(p) in str(e.value) and where in str(e.value) and what in str(e.value)


def test_bad_json_and_missing_files(tmp_path: Path):
    p = tmp_path / "seeds.json"
    p.write_text('[\n{"instruction": "a b c d"},\n{"instruction": }\n]', encoding="utf-8")
    with pytest.raises(InputFileError, match=r"seeds\.json: line 3: invalid JSON"):
        load_seeds(p)
    p.write_text('[{"instruction": "fine task here"}, 7]', encoding="utf-8")
    with pytest.raises(InputFileError, match="item 2: expected a JSON object"):
        load_seeds(p)
    with pytest.raises(InputFileError, match="seed file not found"):
        load_seeds(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(InputFileError, match="no seed tasks"):
        load_seeds(tmp_path / "empty.jsonl")
    (tmp_path / "bin.jsonl").write_bytes(b'{"instruction": "ok ok ok ok"}\n\xff\xfe\n')
    with pytest.raises(InputFileError, match="line 2: invalid UTF-8"):
        load_seeds(tmp_path / "bin.jsonl")
    (tmp_path / "notds").mkdir()
    with pytest.raises(InputFileError, match="not a dataset folder"):
        load_seeds(tmp_path / "notds")
