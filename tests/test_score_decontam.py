"""Decontamination: planted overlaps with real benchmark files are dropped and name the benchmark they hit."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.context import RunContext
from pipeline.errors import InputFileError
from pipeline.records import new_row
from pipeline.stages.score.config import ScoreConfig
from pipeline.stages.score.decontam import Decontaminator, read_eval_items, tokens
from pipeline.stages.score.stage import run_score
from pipeline.store import Dataset, DatasetWriter

EVAL_TEXT = ("Compose an engaging travel blog post about a recent trip to Hawaii, highlighting cultural "
             "experiences and must-see attractions for every visitor")


def _row(instruction, output="A fine answer that is long enough to pass every gate.", input=""):
    return new_row(instruction, input, output, origin="seed")


@pytest.fixture
def eval_files(tmp_path):
    """The same benchmark item in each supported format."""
    (tmp_path / "bench.jsonl").write_text(json.dumps({"question_id": 1, "text": EVAL_TEXT, "category": "writing"}) + "\n")
    (tmp_path / "bench.json").write_text(json.dumps({"data": [{"prompt": EVAL_TEXT, "turns": ["and a follow-up"]}]}))
    pq.write_table(pa.table({"question": [EVAL_TEXT], "id": [3]}), tmp_path / "bench.parquet")
    (tmp_path / "bench.txt").write_text("Some header line\n\n" + EVAL_TEXT + "\n")
    return tmp_path


@pytest.mark.parametrize("name", ["bench.jsonl", "bench.json", "bench.parquet", "bench.txt"])
def test_every_format_finds_a_planted_13gram(eval_files, name):
    d = Decontaminator([eval_files / name])
    planted = _row("Please do this: " + " ".join(tokens(EVAL_TEXT)[2:17]) + ". Thanks.")
    hit = d.check(planted)
    assert hit is not None and hit.file == name and hit.field == "instruction"
    assert len(hit.ngram.split()) == 13
    assert d.check(_row("Write a travel blog post about Hawaii.")) is None


def test_overlap_in_the_output_or_input_is_found_too(eval_files):
    d = Decontaminator([eval_files / "bench.jsonl"])
    assert d.check(_row("Summarise.", input=EVAL_TEXT)).field == "input"
    assert d.check(_row("Write something.", output="Sure! " + EVAL_TEXT)).field == "output"
    only_instr = Decontaminator([eval_files / "bench.jsonl"], fields=("instruction",))
    assert only_instr.check(_row("Write something.", output="Sure! " + EVAL_TEXT)) is None


def test_eight_gram_mode_catches_shorter_overlaps(eval_files):
    nine_words = " ".join(tokens(EVAL_TEXT)[4:13])
    r = _row(f"Here is an idea: {nine_words}, in short.")
    assert Decontaminator([eval_files / "bench.jsonl"], n=13).check(r) is None
    hit = Decontaminator([eval_files / "bench.jsonl"], n=8).check(r)
    assert hit is not None and len(hit.ngram.split()) == 8


def test_short_benchmark_items_match_whole(tmp_path):
    f = tmp_path / "short.jsonl"
    f.write_text(json.dumps({"text": "How can I improve my time management skills?"}) + "\n"
                 + json.dumps({"text": "Hi there"}) + "\n")
    d = Decontaminator([f], n=13, min_tokens=8)
    assert d.stats["short.jsonl"] == {"items": 2, "whole_texts": 1, "too_short_texts": 1}
    assert d.check(_row("Question: how can I improve my time management skills? Be brief.")) is not None
    assert d.check(_row("How can I improve my cooking skills?")) is None


def test_bad_files_fail_clearly(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        read_eval_items(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{not json\n')
    with pytest.raises(InputFileError, match=r"bad.jsonl:2"):
        read_eval_items(bad)


@pytest.mark.realdata
def test_real_eval_sets_with_planted_overlaps(tmp_path, shared_data):
    """vicuna-80 and wizardlm-218 as evaluation sets: planted rows are dropped, each naming its benchmark."""
    vicuna = shared_data / "vicuna_testset_80.jsonl"
    wizard = shared_data / "wizardlm_testset_218.jsonl"
    v_items = [json.loads(x) for x in vicuna.read_text().splitlines() if x.strip()]
    w_items = [json.loads(x) for x in wizard.read_text().splitlines() if x.strip()]
    v_long = next(it["text"] for it in v_items if len(tokens(it["text"])) >= 16)
    w_long = next(it["Instruction"] for it in w_items if len(tokens(it["Instruction"])) >= 20)
    clean = [_row(f"Give me a recipe number {i} for a quick vegetarian dinner.", "Fry onions, add beans and rice; "
                  "season well and serve hot with a salad on the side.") for i in range(6)]
    planted = [
        _row("Answer this: " + v_long, "Here is a thorough answer that covers the question in depth."),
        _row("Please help.", "Okay.", input=w_long),
    ]
    w = DatasetWriter(tmp_path / "in", "import")
    w.write_shard(0, clean[:3] + planted + clean[3:])
    w.write_manifest()
    cfg = ScoreConfig(decontaminate=[str(vicuna), str(wizard)])
    m = run_score(tmp_path / "in", tmp_path / "out", cfg, RunContext(run_id="t", progress=False))
    assert m["drops"] == {"contaminated": 2}
    rej = Dataset(tmp_path / "out").rejected().read().to_pylist()
    details = {r["instruction"]: r["drop_detail"] for r in rej}
    assert details["Answer this: " + v_long].startswith("vicuna_testset_80.jsonl item ")
    assert details["Please help."].startswith("wizardlm_testset_218.jsonl item ") and "input shares" in details["Please help."]
    assert m["totals"]["contaminated[vicuna_testset_80.jsonl]"] == 1
    assert m["totals"]["contaminated[wizardlm_testset_218.jsonl]"] == 1
    assert m["decontamination"]["per_file"]["vicuna_testset_80.jsonl"]["items"] == 80
    assert m["decontamination"]["per_file"]["wizardlm_testset_218.jsonl"]["items"] == 218
    assert Dataset(tmp_path / "out").num_rows() == 6
