"""Reasoning traces in their own column: where the backends find them, the cache, the record schema (old
shards without the column), Orca over a loopback reasoning server, the three export formats, the manifest,
card and report, and that score and dedup read the answer, not the trace."""

from __future__ import annotations

import sqlite3

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from reasoning_server import ReasoningServer

from pipeline import records
from pipeline.config import TeacherSection
from pipeline.context import RunContext
from pipeline.records import new_row
from pipeline.report import build_report
from pipeline.stages.export import ExportConfig, run_export
from pipeline.stages.minhash import MinhashConfig, run_minhash
from pipeline.stages.orca import run_orca
from pipeline.stages.orca.config import OrcaConfig
from pipeline.stages.score.config import ScoreConfig
from pipeline.stages.score.stage import run_score
from pipeline.store import Dataset, DatasetWriter
from pipeline.teacher import TeacherFactory
from pipeline.teacher.base import ChatRequest, Completion
from pipeline.teacher.cache import ResponseCache
from pipeline.teacher.fake import FakeTeacher
from pipeline.teacher.reasoning import split_message, split_think

QUESTIONS = ["What is 2 + 3?", "What is 40 + 2?", "What is 7 + 8?"]


# -- where the reasoning is -------------------------------------------------------

def test_think_tags_are_split_off_the_answer():
    assert split_think("<think>\n2 and 3 make 5.\n</think>\n\nThe answer is 5.") == ("The answer is 5.", "2 and 3 make 5.")
    assert split_think("  <THINK>x</THINK>y") == ("y", "x")
    # an R1-distilled template opened the tag in the prompt: the text starts inside the trace
    assert split_think("2 and 3 make 5.\n</think>\n\nThe answer is 5.") == ("The answer is 5.", "2 and 3 make 5.")
    # cut off while thinking: all of it is reasoning, and there is no answer
    assert split_think("<think>2 and 3 make") == ("", "2 and 3 make")
    assert split_think("The answer is 5.") == ("The answer is 5.", None)
    assert split_think("Use a <think> tag to start.") == ("Use a <think> tag to start.", None)


def test_a_reasoning_field_wins_over_the_text_and_the_newer_name_first():
    assert split_message({"reasoning_content": " r1 "}, "ans") == ("ans", "r1")
    assert split_message({"reasoning": "new", "reasoning_content": "old"}, "ans") == ("ans", "new")
    assert split_message({"reasoning_content": None}, "<think>t</think>a") == ("a", "t")
    assert split_message({}, "plain") == ("plain", None)


def _chat(url: str, questions=QUESTIONS, tmp_path=None, cache=False):
    sec = TeacherSection(backend="openai", base_url=url, cache=cache, max_retries=0,
                         **({"cache_path": str(tmp_path / "c.sqlite")} if cache else {}))
    t = TeacherFactory(sec, tmp_path, 0).build()
    try:
        return t.chat([ChatRequest(messages=[{"role": "user", "content": q}], record_id=q, purpose="t")
                       for q in questions])
    finally:
        t.close()


@pytest.mark.parametrize("mode,field", [("field", "reasoning_content"), ("field", "reasoning"), ("think", None)])
def test_openai_backend_keeps_the_trace_out_of_the_answer(tmp_path, mode, field):
    srv = ReasoningServer(mode, field or "reasoning_content")
    try:
        got = _chat(srv.base_url, tmp_path=tmp_path)
    finally:
        srv.close()
    assert [c.text for c in got] == ["The answer is 5.", "The answer is 42.", "The answer is 15."]
    assert [c.reasoning for c in got] == ["To add 2 and 3: 2 + 3 = 5.", "To add 40 and 2: 40 + 2 = 42.",
                                          "To add 7 and 8: 7 + 8 = 15."]


def test_a_reply_cut_off_while_thinking_has_no_answer_and_orca_drops_it(tmp_path):
    srv = ReasoningServer("cut")
    try:
        (c,) = _chat(srv.base_url, QUESTIONS[:1], tmp_path=tmp_path)
        assert (c.text, c.reasoning, c.finish_reason, c.error) == ("", "To add 2 and", "length", None)
        m = _orca_over(srv, tmp_path)
    finally:
        srv.close()
    assert m["rows_out"] == 0 and m["drops"] == {"empty_output": 3}


def test_the_cache_stores_the_trace_and_serves_it_back(tmp_path):
    srv = ReasoningServer("field")
    try:
        first = _chat(srv.base_url, tmp_path=tmp_path, cache=True)
        second = _chat(srv.base_url, tmp_path=tmp_path, cache=True)
        assert srv.received == 3
    finally:
        srv.close()
    assert all(c.cached for c in second)
    assert [(c.text, c.reasoning) for c in second] == [(c.text, c.reasoning) for c in first]
    assert second[0].reasoning == "To add 2 and 3: 2 + 3 = 5."


def test_a_cache_file_from_before_the_column_is_migrated_and_its_tagged_answers_split(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE responses (key TEXT PRIMARY KEY, model TEXT NOT NULL, ok INTEGER NOT NULL, text TEXT, "
               "finish_reason TEXT, prompt_tokens INTEGER, completion_tokens INTEGER, logprobs TEXT, error_kind TEXT, "
               "error_message TEXT, attempts INTEGER, created_at REAL NOT NULL)")
    db.execute("INSERT INTO responses VALUES ('k1','m',1,'<think>t</think>a','stop',1,2,NULL,NULL,NULL,1,0)")
    db.execute("INSERT INTO responses VALUES ('k2','m',1,'plain','stop',1,2,NULL,NULL,NULL,1,0)")
    db.commit()
    db.close()
    cache = ResponseCache(path)
    try:
        got = cache.get_many(["k1", "k2"])
        assert (got["k1"].text, got["k1"].reasoning) == ("a", "t")
        assert (got["k2"].text, got["k2"].reasoning) == ("plain", None)
        cache.put("k3", "m", Completion(text="ans", reasoning="why", finish_reason="stop"))
        cache.flush()
        assert (cache.get_many(["k3"])["k3"].reasoning) == "why"
    finally:
        cache.close()
    cols = [r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(responses)")]
    assert cols[-1] == "reasoning"


# -- the record schema: datasets written before the column ---------------------------

def _old_shard(path, rows):
    """A dataset folder as distill wrote it before the `reasoning` column existed."""
    w = DatasetWriter(path, "import")
    w.write_shard(0, rows)
    w.write_manifest()
    for shard in sorted(path.glob("part-*.parquet")):
        t = pq.read_table(shard)
        pq.write_table(t.drop_columns(["reasoning"]), shard)
    return path


def test_a_dataset_without_the_column_reads_it_as_null(tmp_path):
    ds_path = _old_shard(tmp_path / "old", [new_row(q, "", "ans", origin="import") for q in QUESTIONS])
    assert "reasoning" not in pq.read_schema(next(ds_path.glob("part-*.parquet"))).names
    ds = Dataset(ds_path)
    assert ds.read(["id", "reasoning"]).column("reasoning").to_pylist() == [None] * 3
    assert [b.column("reasoning").null_count for b in ds.iter_batches(columns=["reasoning", "output"])] == [3]
    full = ds.read()
    assert full.schema.names == records.SCHEMA.names
    spec = ds.plan(2)[0]
    assert spec.read(["output", "reasoning"]).column_names == ["output", "reasoning"]


def test_old_and_new_shards_of_one_dataset_concatenate(tmp_path):
    path = tmp_path / "mixed"
    w = DatasetWriter(path, "import")
    w.write_shard(0, [new_row(q, "", "ans", origin="import") for q in QUESTIONS[:2]])
    old = sorted(path.glob("part-*.parquet"))[0]
    pq.write_table(pq.read_table(old).drop_columns(["reasoning"]), old)
    w.write_shard(1, [new_row(QUESTIONS[2], "", "ans", origin="import", reasoning="why")])
    w.write_manifest()
    ds = Dataset(path)
    assert ds.read().column("reasoning").to_pylist() == [None, None, "why"]
    (spec,) = ds.plan(10)  # one shard over both files
    assert spec.read().column("reasoning").to_pylist() == [None, None, "why"]
    assert [r["reasoning"] for r in spec.read_rows()] == [None, None, "why"]


# -- a real stage end to end, and the three export formats ------------------------------

def _questions(path):
    w = DatasetWriter(path, "import")
    w.write_shard(0, [new_row(q, "", "", origin="import") for q in QUESTIONS])
    w.write_manifest()
    return path


def _orca_over(srv: ReasoningServer, tmp_path):
    sec = TeacherSection(backend="openai", base_url=srv.base_url, cache=True,
                         cache_path=str(tmp_path / "cache.sqlite"), max_retries=0)
    ctx = RunContext(run_id="r1", workdir=tmp_path, teacher_factory=TeacherFactory(sec, tmp_path, 0), progress=False)
    try:
        return run_orca(_questions(tmp_path / "in"), tmp_path / "orca", ctx, OrcaConfig(max_tokens=64))
    finally:
        ctx.close()


@pytest.mark.parametrize("mode", ["field", "think"])
def test_orca_over_a_reasoning_server_then_every_export_format(tmp_path, mode):
    srv = ReasoningServer(mode)
    try:
        m = _orca_over(srv, tmp_path)
    finally:
        srv.close()
    traces = ["To add 2 and 3: 2 + 3 = 5.", "To add 40 and 2: 40 + 2 = 42.", "To add 7 and 8: 7 + 8 = 15."]
    answers = ["The answer is 5.", "The answer is 42.", "The answer is 15."]
    assert m["rows_out"] == 3
    assert m["totals"]["reasoning_rows"] == 3 and m["totals"]["reasoning_chars"] == sum(map(len, traces))
    rows = sorted(Dataset(tmp_path / "orca").iter_rows(), key=lambda r: QUESTIONS.index(r["instruction"]))
    assert [r["output"] for r in rows] == answers
    assert [r["reasoning"] for r in rows] == traces
    assert all("<think>" not in r["messages"][-1]["content"] and "To add" not in r["messages"][-1]["content"]
               for r in rows)

    def release(fmt):
        out = tmp_path / f"rel-{fmt}"
        manifest = run_export(tmp_path / "orca", out, ExportConfig(reasoning=fmt), progress=False)
        t = pa.concat_tables(pq.read_table(f) for f in sorted(out.glob("train-*.parquet")))
        got = sorted(t.to_pylist(), key=lambda r: QUESTIONS.index(r["messages"][-2]["content"]))
        return manifest, got, (out / "README.md").read_text()

    mf, got, card = release("field")
    assert [r["reasoning"] for r in got] == traces
    assert [r["messages"][-1]["content"] for r in got] == answers
    assert mf["columns"][:2] == ["messages", "reasoning"]
    assert mf["reasoning"] == {"format": "field", "unit": "characters", "rows_with_reasoning": 3, "rows": 3,
                               "total": sum(map(len, traces)), "mean": round(sum(map(len, traces)) / 3, 1),
                               "median": float(len(traces[2])), "max": max(map(len, traces))}
    assert "Reasoning format: **field**" in card and "3 of 3 rows have a reasoning trace" in card

    mf, got, card = release("think_tags")
    assert "reasoning" not in got[0] and "reasoning" not in mf["columns"]
    assert [r["messages"][-1]["content"] for r in got] == [f"<think>\n{t}\n</think>\n\n{a}" for t, a in zip(traces, answers)]
    assert mf["reasoning"]["format"] == "think_tags" and "Reasoning format: **think_tags**" in card

    mf, got, card = release("answer_only")
    assert "reasoning" not in got[0]
    assert [r["messages"][-1]["content"] for r in got] == answers
    assert "Reasoning format: **answer_only**" in card

    rep = build_report(tmp_path / "rel-field")
    assert sorted(rep["lengths"]["reasoning"]) == sorted(map(len, traces))


def test_export_of_a_dataset_without_reasoning_says_so_and_old_shards_export(tmp_path):
    _old_shard(tmp_path / "old", [new_row(q, "", "ans", origin="import") for q in QUESTIONS])
    m = run_export(tmp_path / "old", tmp_path / "rel", ExportConfig(), progress=False)
    assert m["reasoning"] == {"format": "field", "unit": "characters", "rows_with_reasoning": 0, "rows": 3}
    assert pq.read_table(next((tmp_path / "rel").glob("train-*.parquet"))).column("reasoning").null_count == 3
    assert "No row has a reasoning trace" in (tmp_path / "rel" / "README.md").read_text()
    assert "reasoning" not in build_report(tmp_path / "rel")["lengths"]


def test_export_rejects_an_unknown_format():
    with pytest.raises(ValueError, match="answer_only"):
        ExportConfig(reasoning="inline")


# -- score and dedup read the answer, never the trace ---------------------------------------

MARK = "ZQXJ-reasoning-marker"


def _with_traces(path, rows):
    w = DatasetWriter(path, "orca")
    w.write_shard(0, rows)
    w.write_manifest()
    return path


def test_the_judge_and_the_heuristic_never_see_the_reasoning(tmp_path):
    answer = "Paris is the capital of France, on the Seine."
    rows = [new_row("What is the capital of France?", "", answer, origin="orca", reasoning=f"{MARK} " * 400),
            new_row("Name the capital city of France.", "", answer, origin="orca")]  # as many words
    _with_traces(tmp_path / "in", rows)
    judge = FakeTeacher(lambda req: "Score: 5")
    ctx = RunContext(run_id="r", teacher_factory=lambda: judge, progress=False)
    run_score(tmp_path / "in", tmp_path / "scored", ScoreConfig(judge="teacher"), ctx)
    assert judge.seen and not any(MARK in m["content"] for r in judge.seen for m in r.messages)
    run_score(tmp_path / "in", tmp_path / "heur", ScoreConfig(judge="none"), RunContext(run_id="r", progress=False))
    scores = {r["instruction"]: r["score"] for r in Dataset(tmp_path / "heur").iter_rows()}
    # the same rows with no trace at all score the same: a long trace buys nothing
    _with_traces(tmp_path / "bare", [dict(r, reasoning=None) for r in rows])
    run_score(tmp_path / "bare", tmp_path / "heur_bare", ScoreConfig(judge="none"), RunContext(run_id="r", progress=False))
    bare = {r["instruction"]: r["score"] for r in Dataset(tmp_path / "heur_bare").iter_rows()}
    assert scores == bare


def test_minhash_dedups_on_the_answer_unless_configured(tmp_path):
    answer = "The mitochondria is the powerhouse of the cell, making ATP from glucose and oxygen."
    rows = [new_row("Explain what mitochondria do in a cell.", "", answer, origin="orca",
                    reasoning=" ".join(f"w{i}" for i in range(300))),
            new_row("Explain what mitochondria do in a cell!", "", answer, origin="orca",
                    reasoning=" ".join(f"v{i}" for i in range(300)))]
    _with_traces(tmp_path / "in", rows)
    m = run_minhash(tmp_path / "in", tmp_path / "dedup", MinhashConfig(), progress=False)
    assert m["rows_out"] == 1  # the traces differ wholly, the answers are the same: duplicates
    m = run_minhash(tmp_path / "in", tmp_path / "dedup2",
                    MinhashConfig(columns=["instruction", "input", "output", "reasoning"]), progress=False)
    assert m["rows_out"] == 2  # configured to read the trace too: the different traces keep both


def test_semdedup_embeds_no_trace_unless_configured():
    from pipeline.embeddings.encoder import text_of
    from pipeline.stages.semdedup.config import SemdedupConfig

    t = records.to_table([new_row("q", "", "the answer", origin="orca", reasoning=MARK)])
    assert MARK not in text_of(t, SemdedupConfig().fields)[0]
    assert MARK in text_of(t, SemdedupConfig(fields=["instruction", "reasoning"]).fields)[0]


def test_orca_manifest_counts_no_reasoning_for_a_plain_teacher(tmp_path):
    from pipeline.teacher.fake import FakeTeacher as Fake

    ctx = RunContext(run_id="r", teacher_factory=lambda: Fake(lambda r: "Answer: 5"), progress=False)
    m = run_orca(_questions(tmp_path / "in"), tmp_path / "o", ctx, OrcaConfig(max_tokens=32))
    assert "reasoning_rows" not in m["totals"]
    assert [r["reasoning"] for r in Dataset(tmp_path / "o").iter_rows()] == [None] * 3
