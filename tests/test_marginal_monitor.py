"""The novelty monitor (`[run] min_novelty` during generation) on pools whose novelty is known by construction."""

from __future__ import annotations

import json

import pytest
from minhash_support import write_dataset
from self_instruct_support import novel_instruction
from test_marginal import DUP_SHARE, SHARD, pool_rows

from pipeline import marginal
from pipeline.config import load_config
from pipeline.context import RunContext, RunPaths
from pipeline.novelty_monitor import NoveltyMonitor
from pipeline.report import write_report
from pipeline.runplan import run_plan
from pipeline.stage import StageSpec
from pipeline.stages.minhash.cli import SPEC as MINHASH
from pipeline.stages.minhash.signatures import shingles, signature
from pipeline.stages.self_instruct import SelfInstructConfig, run_self_instruct
from pipeline.teacher.base import ChatRequest
from pipeline.teacher.fake import FakeTeacher


def test_the_monitor_counts_the_copies_put_in_each_shard_of_the_known_pool():
    rows = pool_rows()
    mon = NoveltyMonitor({"threshold": 0.7})
    pts = [mon.observe([r["output"] for r in rows[k * SHARD:(k + 1) * SHARD]]) for k in range(len(DUP_SHARE))]
    assert [p["novel_per_1k"] for p in pts] == [1000.0, 800.0, 500.0, 200.0]
    assert [p["generated"] for p in pts] == [SHARD] * 4
    assert [p["rows_generated"] for p in pts] == [100, 200, 300, 400]
    assert pts[-1]["rows_novel"] == 250
    mon.min_novelty = 300
    assert [mon.below(p) for p in pts] == [False, False, False, True]


def test_the_monitor_s_signature_is_the_minhash_stage_s():
    mon = NoveltyMonitor()
    for text in ("Write a haiku about the sea, in five words or fewer.", "two words", "", "Ünïcode ﬁne TEXT x+y"):
        assert (mon.signatures([text])[0] == signature(shingles(text))).all()


# Bootstrap request k writes NOVEL[k] new instructions and fills its 7 items with copies of request 0's first one;
# at 4 tasks a shard, shard 0 is request 0 (4 of 7 novel), shard 1 requests 1-2 (4 of 14), shard 2
# requests 3-6 (4 of 28): 571.4, 285.7 and 142.9 novel items per 1k generated.
NOVEL = {0: 4, 1: 2, 2: 2}
EXPECTED = [(7, 4, 571.4), (14, 4, 285.7), (28, 4, 142.9)]


def _request_index(rid: str) -> int:
    return int(rid.removeprefix("request")) if rid.startswith("request") else int(rid[5:11])  # batch000003-0


def world(req: ChatRequest) -> str:
    if req.purpose.endswith("bootstrap"):
        n = NOVEL.get(_request_index(req.record_id), 1)
        items = [novel_instruction(f"{req.record_id}:{i}") for i in range(n)]
        first = "request0000000" if req.record_id.startswith("request") else "batch000000-0"
        items += [novel_instruction(f"{first}:0")] * (7 - n)   # from an earlier shard: the monitor must recall it
        return "9. " + "\n".join(f"{9 + i}. {t}" if i else t for i, t in enumerate(items))
    if req.purpose.endswith("classify"):
        return "No"
    return "Example 1\nInput: first\nOutput: answer one\nExample 2\nInput: second\nOutput: answer two"


def _config(schedule):
    return SelfInstructConfig(num_instructions=100, shard_tasks=4, schedule=schedule, window=3, request_batch_size=1)


@pytest.mark.parametrize("schedule", ["window", "paper"])
def test_self_instruct_stops_generating_when_a_shard_falls_under_min_novelty(tmp_path, schedule):
    fake = FakeTeacher(world)
    ctx = RunContext(run_id="r", teacher_factory=lambda: fake, progress=False, min_novelty=200)
    m = run_self_instruct(tmp_path / "si", ctx, _config(schedule))
    pts = m["novelty"]["points"]
    assert [(p["generated"], p["novel"], p["novel_per_1k"]) for p in pts] == EXPECTED
    assert [p["rows_generated"] for p in pts] == [7, 21, 49]
    assert m["stop_reason"] == "min_novelty" and m["accepted_instructions"] == 12
    st = m["stopped"]
    assert (st["reason"], st["after"], st["novel_per_1k"], st["rows_generated"]) == ("min_novelty", "shard 2", 142.9, 49)
    assert m["shards"] == 3
    markers = sorted((tmp_path / "si" / "_done").glob("part-*.json"))
    assert [json.loads(f.read_text())["novelty"]["novel_per_1k"] for f in markers] == [571.4, 285.7, 142.9]
    asked = fake.stats.requests
    # a rerun of the stopped stage generates nothing more: it rebuilds the monitor from the raw replies
    again = FakeTeacher(world)
    ctx2 = RunContext(run_id="r", teacher_factory=lambda: again, progress=False, min_novelty=200)
    m2 = run_self_instruct(tmp_path / "si", ctx2, _config(schedule))
    assert again.stats.requests == 0 and asked > 0
    assert m2["stop_reason"] == "min_novelty" and m2["novelty"]["points"] == pts and m2["shards"] == 3


def test_without_min_novelty_the_monitor_only_measures(tmp_path):
    ctx = RunContext(run_id="r", teacher_factory=lambda: FakeTeacher(world), progress=False)
    m = run_self_instruct(tmp_path / "si", ctx, _config("window").model_copy(update={"num_instructions": 20}))
    assert m["stop_reason"] == "target_reached" and "stopped" not in m
    assert [p["novel_per_1k"] for p in m["novelty"]["points"]][:3] == [571.4, 285.7, 142.9]


def _plan(later):
    def generate(input, out, cfg, ctx):
        ctx.teacher_factory = lambda: FakeTeacher(world)
        return run_self_instruct(out, ctx, _config("window"))

    def after(input, out, cfg, ctx):
        later.append(input)
        return write_dataset(out, [], shard_rows=SHARD) and json.loads((out / "_manifest.json").read_text())

    return [StageSpec("self_instruct", None, generate, str, "generate", needs_input=False), MINHASH,
            StageSpec("score", None, after, str, "a later step")]


def test_a_stopped_generation_still_runs_the_later_steps_and_the_summary_says_why(tmp_path):
    cfg = load_config(None)
    cfg.run.min_novelty = 200
    later, lines = [], []
    paths = RunPaths(tmp_path / "work", "r1")
    summary = run_plan(cfg, paths, plan=_plan(later), echo=lines.append, progress=False)
    assert [s["status"] for s in summary["steps"]] == ["done", "done", "done"]
    assert [p.name for p in later] == ["minhash"]   # the release's steps ran on what was generated
    st = summary["stopped"]
    assert (st["reason"], st["step"], st["rows_generated"], st["novel_per_1k"]) == \
        ("min_novelty", "self_instruct", 49, 142.9)
    assert json.loads((paths.run_dir / "run_summary.json").read_text())["stopped"] == st
    assert any(line.startswith("[run] self_instruct stopped generating: its shard 2 added 142.9 novel rows")
               for line in lines)
    # the report's generation curve is the monitor's figures
    manifest = json.loads((paths.run_dir / "self_instruct" / "_manifest.json").read_text())
    assert marginal.generation_curve(paths.run_dir) == manifest["novelty"]["points"]
    page = write_report(paths.run_dir).read_text()
    assert "This run stopped generating</strong>: self_instruct stopped generating: its shard 2 added 142.9" in page
    assert "Per shard of the teacher&#x27;s generation" in page
    pr = marginal.projection(paths.run_dir, {"1m": 1_000_000})   # distill plan reads the generation curve
    assert (pr["curve"], pr["pilot_rows_generated"], pr["pilot_novel_per_1k"]) == ("generation", 49, 142.9)
    # a rerun finds every step done and generates nothing more; the summary still says why it stopped
    again = run_plan(cfg, paths, plan=_plan(later), echo=lines.append, progress=False)
    assert [s["status"] for s in again["steps"]] == ["already done"] * 3
    assert again["stopped"]["rows_generated"] == 49


@pytest.mark.parametrize("schedule", ["window", "paper"])
def test_a_resumed_run_measures_against_the_shards_done_before_the_crash(tmp_path, schedule):
    def crash(req: ChatRequest) -> str:
        if req.purpose.endswith("bootstrap") and _request_index(req.record_id) == 4:
            raise RuntimeError("the machine went away")
        return world(req)

    ctx = RunContext(run_id="r", teacher_factory=lambda: FakeTeacher(crash), progress=False, min_novelty=200)
    with pytest.raises(RuntimeError):
        run_self_instruct(tmp_path / "si", ctx, _config(schedule))
    assert len(list((tmp_path / "si" / "_done").glob("part-*.json"))) == 2   # shards 0 and 1
    ctx = RunContext(run_id="r", teacher_factory=lambda: FakeTeacher(world), progress=False, min_novelty=200)
    m = run_self_instruct(tmp_path / "si", ctx, _config(schedule))
    # shard 2's copies are of request 0's first task: novel again only if the monitor forgot shard 0
    assert [(p["generated"], p["novel"], p["novel_per_1k"]) for p in m["novelty"]["points"]] == EXPECTED
    assert m["stop_reason"] == "min_novelty"
