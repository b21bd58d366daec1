"""The Self-Instruct loop with a scripted teacher: pool growth, records, stop rules, resume, CLI.

The embedded-teacher runs are in test_self_instruct_teacher.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from self_instruct_support import THIRD_REQUEST, bootstrap_reply, kill_config, make_ctx, novel_instruction, world
from typer.testing import CliRunner

from pipeline import records
from pipeline.errors import InputFileError, TeacherUnavailable
from pipeline.prompts import load_template
from pipeline.stages.self_instruct import SelfInstructConfig, run_self_instruct
from pipeline.stages.self_instruct.output import restore
from pipeline.stages.self_instruct.seeds import load_seeds
from pipeline.store import Dataset, DatasetError, DatasetWriter
from pipeline.teacher.base import TeacherError

HERE = Path(__file__).resolve().parent
PAPER = {"schedule": "paper"}   # tests of the paper's batches (request_batch_size prompts from one pool state)


def rows(path: Path) -> list[dict]:
    return list(Dataset(path).iter_rows())


def rejected(path: Path) -> list[dict]:
    rej = Dataset(path).rejected()
    return list(rej.iter_rows()) if rej else []


def meta(row: dict) -> dict:
    return records.get_meta(row, "self_instruct")


def test_grows_the_pool_to_the_target_with_full_provenance(tmp_path):
    ctx, fake = make_ctx()
    cfg = SelfInstructConfig(num_instructions=12, request_batch_size=2, **PAPER)
    m = run_self_instruct(tmp_path / "out", ctx, cfg)
    assert m["stop_reason"] == "target_reached" and m["accepted_instructions"] == 12
    kept = rows(tmp_path / "out")
    assert len({r["instruction"] for r in kept}) == 12 and len(kept) == 24   # two instances each
    assert Dataset(tmp_path / "out").complete and m["rows_out"] == 24
    # batch 0 gave 14 candidates: 12 accepted, the last 2 not evaluated
    assert Counter(r["drop_reason"] for r in rejected(tmp_path / "out")) == {"target_reached": 2}
    assert sorted(meta(r)["pool_index"] for r in kept[::2]) == list(range(12))
    hashes = m["templates"]
    for r in kept:
        assert r["origin"] == "self_instruct" and r["run_id"] == "test-run"
        assert r["messages"] == records.build_messages(r["instruction"], r["input"], r["output"])
        assert r["teacher_backend"] == "fake" and r["teacher_model"] == "fake-teacher"
        s = json.loads(r["sampling"])
        assert (s["bootstrap"]["temperature"], s["bootstrap"]["top_p"], s["bootstrap"]["presence_penalty"]) == (0.7, 0.5, 2.0)
        assert s["classify"]["max_tokens"] == 3 and s["classify"]["temperature"] == 0
        clf = r["is_classification"]
        assert s["instances"]["presence_penalty"] == 1.5 and s["instances"]["max_tokens"] == (300 if clf else 350)
        assert r["prompt_template"] == f"self_instruct/instances_{'output' if clf else 'input'}_first.txt"
        assert r["prompt_hash"] == load_template(r["prompt_template"]).hash == hashes[r["prompt_template"]]
        assert clf == r["instruction"].startswith("Rank") and r["prompt_tokens"] >= 0
        md = meta(r)
        scores = [s["score"] for s in md["most_similar"]]
        assert len(scores) == 10 and scores == sorted(scores, reverse=True) and 0 <= md["mean_similarity"] <= scores[0]
        assert md["classification_answer"] == ("Yes" if clf else "No")
        assert md["instances_raw"].startswith("Class label" if clf else "Example 1")
    # token columns add up to what the teacher reported, less the share of the 2 unevaluated items
    t = m["totals"]
    unused = len(fake.seen[1].messages[0]["content"].split()) * 2 / 7
    assert abs(sum(r["prompt_tokens"] for r in kept) - (fake.stats.prompt_tokens - unused)) <= 12
    assert t["teacher_prompt_tokens"] == fake.stats.prompt_tokens and t["requests"] == fake.stats.requests == 2 + 12 + 12
    raw = (tmp_path / "out" / "raw" / "part-00000.jsonl").read_text().splitlines()
    assert len(raw) == 2 and json.loads(raw[0])["text"] == bootstrap_reply(fake.seen[0])


def test_prompts_hold_six_seeds_and_two_machine_instructions(tmp_path):
    ctx, fake = make_ctx()
    seeds = {t.instruction.strip().rstrip(":") for t in load_seeds().tasks}
    run_self_instruct(tmp_path / "out", ctx, SelfInstructConfig(num_instructions=20, request_batch_size=2, **PAPER))
    boot = [r for r in fake.seen if r.purpose == "self_instruct:bootstrap"]
    assert len(boot) == 4
    for i, req in enumerate(boot):
        prompt = req.messages[0]["content"]
        listed = [ln.split(". ", 1)[1] for ln in prompt.splitlines()[2:10]]
        n_seed = sum(t in seeds for t in listed)
        assert (n_seed, len(listed)) == ((8, 8) if i < 2 else (6, 8)), prompt   # batch 0: no machine pool yet
        assert req.sampling.stop == ("\n\n", "\n16", "16.", "16 .") and req.sampling.max_tokens == 1024
        assert req.record_id == f"batch{i // 2:06d}-{i % 2}"
    assert boot[0].messages != boot[1].messages


def test_novelty_counts_instructions_accepted_earlier_in_the_same_reply(tmp_path):
    seed = load_seeds().tasks[0].instruction
    first = "Describe the history of tea drinking in China briefly"

    def responder(req):
        if req.purpose.endswith("bootstrap"):
            return f"9. {first}\n10. {first} please\n11. {seed}\n12. Draw a map of the town centre quickly\n13. Okay"
        return world(req)

    ctx, _ = make_ctx(responder)
    m = run_self_instruct(tmp_path / "out", ctx, SelfInstructConfig(num_instructions=2, request_batch_size=1, patience=2))
    assert m["accepted_instructions"] == 1 and m["stop_reason"] == "no_progress"
    rej = {r["instruction"]: r for r in rejected(tmp_path / "out")}
    dup = rej["Describe the history of tea drinking in China briefly please"]
    assert dup["drop_reason"] == "rouge_l_too_similar" and "machine instruction" in dup["drop_detail"]
    assert meta(dup)["similar_to"] == first
    assert rej[seed]["drop_reason"] == "rouge_l_too_similar" and "seed instruction" in rej[seed]["drop_detail"]
    assert rej["Draw a map of the town centre quickly"]["drop_reason"] == "blacklisted_keyword"
    assert rej["Okay"]["drop_reason"] == "too_few_words"
    assert all(r["drop_stage"] == "self_instruct" for r in rej.values())


def served(text: str, stops) -> str:
    """What a server sends back: the text up to the first stop sequence."""
    cut = min([i for i in (text.find(s) for s in stops) if i >= 0], default=len(text))
    return text[:cut]


def test_chat_lead_ins_and_closing_remarks_do_not_become_tasks(tmp_path):
    tasks = [novel_instruction(f"chatty:{i}") for i in range(7)]
    chatty = ("Sure! Here are some new tasks.\n" + "\n".join(f"{9 + i}. {t}" for i, t in enumerate(tasks))
              + "\n\nLet me know if you would like more tasks!")

    def responder(req):
        if req.purpose.endswith("bootstrap"):
            j = int(req.record_id.rsplit("-", 1)[1])
            text = chatty if j == 0 else "Here are 8 more instructions:\n\n9. " + novel_instruction(req.record_id)
            return served(text, req.sampling.stop)
        return world(req)

    ctx, fake = make_ctx(responder)
    m = run_self_instruct(tmp_path / "out", ctx, SelfInstructConfig(num_instructions=7, request_batch_size=2, **PAPER))
    assert m["stop_reason"] == "target_reached"
    assert sorted({r["instruction"] for r in rows(tmp_path / "out")}) == sorted(tasks)   # all seven, no chatter
    rej = rejected(tmp_path / "out")
    assert Counter(r["drop_reason"] for r in rej) == {"chat_preamble": 2}
    assert {r["instruction"] for r in rej} == {"Sure! Here are some new tasks.", "Here are 8 more instructions:"}
    assert sorted(r["drop_detail"] for r in rej) == [
        "a lead-in line, not a task",
        "a lead-in line, not a task; the reply ended at the blank line after it (the paper's stop)"]
    raw = [json.loads(line) for line in (tmp_path / "out" / "raw" / "part-00000.jsonl").read_text().splitlines()]
    assert raw[1]["text"] == "Here are 8 more instructions:"   # the paper's blank-line stop ended it there


def test_truncated_reply_is_discarded_whole(tmp_path):
    def responder(req):
        if req.purpose.endswith("bootstrap"):
            return bootstrap_reply(req), "length"
        return world(req)

    ctx, _ = make_ctx(responder)
    m = run_self_instruct(tmp_path / "out", ctx, SelfInstructConfig(num_instructions=3, request_batch_size=1, patience=2))
    assert m["stop_reason"] == "no_progress" and m["accepted_instructions"] == 0 and m["rows_out"] == 0
    assert Counter(r["drop_reason"] for r in rejected(tmp_path / "out")) == {"response_truncated": 14}


def test_alpaca_mode_drops_only_the_cut_item(tmp_path):
    def responder(req):
        assert req.purpose == "self_instruct:bootstrap"       # no classification or instance calls
        k = req.record_id
        items = [f"{4 + i}. Instruction: {novel_instruction(f'{k}:{i}')}\n{4 + i}. Input:\n"
                 f"{'<noinput>' if i % 2 else 'some input ' + str(i)}\n{4 + i}. Output:\nanswer {i}" for i in range(4)]
        items.append("8. Instruction: Compose a song about the sea and its music\n8. Input:\n<noinput>\n8. Output:\nla la")
        items.append("9. Instruction: A cut")
        return " " + "\n###\n".join(items)[len("4. Instruction: "):], "length"

    ctx, fake = make_ctx(responder)
    cfg = SelfInstructConfig(mode="alpaca", num_instructions=8, request_batch_size=1)
    m = run_self_instruct(tmp_path / "out", ctx, cfg)
    kept = rows(tmp_path / "out")
    assert m["accepted_instructions"] == 8 and len(kept) == 8
    assert {r["output"] for r in kept} == {f"answer {i}" for i in range(4)}
    assert sum(r["input"] == "" for r in kept) == 4 and kept[0]["input"] == "some input 0"
    assert all(r["prompt_template"] == "self_instruct/alpaca.txt" and r["is_classification"] is None for r in kept)
    reasons = Counter(r["drop_reason"] for r in rejected(tmp_path / "out"))
    # 'music' is on Alpaca's list; in the second reply the target is met before that item
    assert reasons == {"item_truncated": 2, "blacklisted_keyword": 1, "target_reached": 1}
    prompt = fake.seen[0].messages[0]["content"]
    assert prompt.count("Instruction:") == 4 and fake.seen[0].sampling.temperature == 1.0


def test_classification_tasks_get_output_first_instances(tmp_path):
    ctx, fake = make_ctx()
    run_self_instruct(tmp_path / "out", ctx, SelfInstructConfig(num_instructions=14, request_batch_size=2))
    kept = rows(tmp_path / "out")
    clf = [r for r in kept if r["instruction"].startswith("Rank")]
    assert clf, "the scripted world should produce some 'Rank' tasks"
    for r in clf:
        assert r["is_classification"] is True and r["task_kind"] == "classification"
        assert r["output"] in ("High", "Low") and r["prompt_template"] == "self_instruct/instances_output_first.txt"
    inst_reqs = {r.record_id: r for r in fake.seen if r.purpose == "self_instruct:instances"}
    r0 = inst_reqs[records.make_id(clf[0]["instruction"])]
    assert r0.sampling.max_tokens == 300 and r0.sampling.stop == ("Example 6", "\nTask:")


def test_a_chat_yes_sends_the_task_output_first_and_an_unclear_reply_is_counted(tmp_path):
    def responder(req):   # a chat teacher: "Yes." for classification, a hedge for one other verb
        if req.purpose.endswith("classify"):
            ins = req.messages[0]["content"].rsplit("Task: ", 1)[1]
            return "Yes." if ins.startswith("Rank") else ("Maybe" if ins.startswith("Outline") else "No.")
        return world(req)

    ctx, _ = make_ctx(responder)
    m = run_self_instruct(tmp_path / "out", ctx, SelfInstructConfig(num_instructions=14, request_batch_size=2))
    kept = rows(tmp_path / "out")
    ranks = [r for r in kept if r["instruction"].startswith("Rank")]
    unclear = {r["instruction"] for r in kept if r["instruction"].startswith("Outline")}
    assert ranks and unclear
    for r in ranks:
        assert r["is_classification"] is True and r["prompt_template"] == "self_instruct/instances_output_first.txt"
        assert meta(r)["classification_answer"] == "Yes."
    assert m["totals"]["classification_tasks"] == len({r["instruction"] for r in ranks})
    assert m["totals"]["classification_unclear"] == len(unclear)


def test_instance_failures_are_recorded_and_the_task_stays_in_the_pool(tmp_path):
    def responder(req):
        if req.purpose.endswith("instances"):
            return "Example 1\nInput: same\nOutput: yes\nExample 2\nInput: same\nOutput: no"
        if req.purpose.endswith("classify"):
            return TeacherError("bad_request", "HTTP 400", retryable=False) if "Plan" in req.messages[0]["content"].rsplit("Task:", 1)[1] else "No"
        return world(req)

    ctx, _ = make_ctx(responder)
    m = run_self_instruct(tmp_path / "out", ctx, SelfInstructConfig(num_instructions=7, request_batch_size=1))
    assert m["rows_out"] == 0 and m["accepted_instructions"] == 7
    reasons = Counter(r["drop_reason"] for r in rejected(tmp_path / "out"))
    plans = reasons["teacher_error"]
    assert reasons["conflicting_outputs"] == 2 * (7 - plans) and reasons["no_valid_instances"] == 7 - plans
    st = restore(DatasetWriter(tmp_path / "out", "self_instruct", plan=json.loads((tmp_path / "out" / "_plan.json").read_text())))
    assert len(st.machine) == 7   # accepted instructions without instances still count for the pool


@pytest.mark.parametrize("kwargs, reason", [
    ({"patience": 3}, "no_progress"),
    ({"max_requests": 4}, "max_requests"),
    ({"max_tokens_total": 500}, "max_tokens_total"),
])
def test_weak_teacher_stops_with_a_recorded_reason(tmp_path, kwargs, reason):
    seeds = [t.instruction for t in load_seeds().tasks]

    def responder(req):   # only ever repeats seed tasks: nothing is novel
        if req.purpose.endswith("bootstrap"):
            return "9. " + "\n10. ".join(seeds[:3])
        return world(req)

    ctx, fake = make_ctx(responder)
    m = run_self_instruct(tmp_path / "out", ctx, SelfInstructConfig(num_instructions=5, request_batch_size=2, **kwargs))
    assert m["stop_reason"] == reason and m["accepted_instructions"] == 0
    assert len(fake.seen) < 20
    assert Counter(r["drop_reason"] for r in rejected(tmp_path / "out")) == {"rouge_l_too_similar": 3 * len(fake.seen)}


def test_teacher_errors_are_rows_not_crashes(tmp_path):
    ctx, _ = make_ctx(lambda req: TeacherError("bad_request", "HTTP 400: no", retryable=False))
    m = run_self_instruct(tmp_path / "out", ctx, SelfInstructConfig(num_instructions=2, request_batch_size=2, patience=4))
    assert m["stop_reason"] == "no_progress" and m["drops"] == {"teacher_error": 4}
    assert rejected(tmp_path / "out")[0]["drop_detail"] == "bad_request: HTTP 400: no"


def test_an_outside_teacher_failure_stops_the_run_resumably_and_drops_nothing(tmp_path):
    """A timeout is not the row's doing: no teacher_error reject, exit 4, and the rerun goes on from the
    done shards with nothing asked twice that was answered."""
    cfg = SelfInstructConfig(num_instructions=8, request_batch_size=2, shard_tasks=2)
    ctx, fake = make_ctx()
    calls = {"n": 0}
    real = fake.responder

    def failing_late(req):
        calls["n"] += 1
        return TeacherError("timeout", "no answer in 120 s") if calls["n"] > 6 else real(req)
    fake.responder = failing_late
    with pytest.raises(TeacherUnavailable, match=r"self_instruct: \d+ of \d+ \w+ requests unanswered \(timeout"):
        run_self_instruct(tmp_path / "out", ctx, cfg)
    assert not (tmp_path / "out" / "_manifest.json").exists()
    assert all(r["drop_reason"] != "teacher_error" for r in rejected(tmp_path / "out"))
    ctx2, fake2 = make_ctx()
    m = run_self_instruct(tmp_path / "out", ctx2, cfg)
    ctx3, _ = make_ctx()
    ref = run_self_instruct(tmp_path / "straight", ctx3, cfg)
    assert m["accepted_instructions"] == ref["accepted_instructions"] and "teacher_error" not in m["drops"]
    key = lambda r: (r["instruction"], r["input"], r["output"])  # noqa: E731
    assert [key(r) for r in rows(tmp_path / "out")] == [key(r) for r in rows(tmp_path / "straight")]


@pytest.mark.parametrize("schedule", ["window", "paper"])
def test_killed_run_resumes_without_losing_or_repeating_work(tmp_path, schedule):
    """SIGKILL mid-run (after two shards), rerun: same output as an uninterrupted run, no batch asked twice."""
    out = tmp_path / "killed"
    child = subprocess.run([sys.executable, str(HERE / "self_instruct_support.py"), str(out), THIRD_REQUEST[schedule],
                            schedule], capture_output=True, text=True, cwd=HERE.parent)
    assert child.returncode == -9, child.stderr
    assert not (out / "_manifest.json").exists() and len(list((out / "_done").glob("*.json"))) == 2
    ctx, fake = make_ctx()
    m = run_self_instruct(out, ctx, kill_config(schedule))
    asked = [r.record_id for r in fake.seen if r.purpose.endswith("bootstrap")]
    assert asked == [THIRD_REQUEST[schedule]]   # batches 0 and 1 came back from the done shards
    ctx2, _ = make_ctx()
    ref = run_self_instruct(tmp_path / "straight", ctx2, kill_config(schedule))
    key = lambda r: (r["instruction"], r["input"], r["output"])  # noqa: E731
    assert [key(r) for r in rows(out)] == [key(r) for r in rows(tmp_path / "straight")]
    assert sorted(key(r) for r in rejected(out)) == sorted(key(r) for r in rejected(tmp_path / "straight"))
    assert m["accepted_instructions"] == ref["accepted_instructions"] == 16
    assert m["totals"]["batches"] == ref["totals"]["batches"] == 3


@pytest.mark.parametrize("schedule", ["window", "paper"])
def test_rerun_with_other_settings_is_refused_but_a_bigger_target_extends(tmp_path, schedule):
    ctx, _ = make_ctx()
    run_self_instruct(tmp_path / "out", ctx, SelfInstructConfig(num_instructions=3, request_batch_size=1, schedule=schedule))
    with pytest.raises(DatasetError, match="different settings"):
        run_self_instruct(tmp_path / "out", make_ctx()[0], SelfInstructConfig(
            num_instructions=3, request_batch_size=1, bootstrap={"temperature": 0.9}, schedule=schedule))
    other = "paper" if schedule == "window" else "window"
    with pytest.raises(DatasetError, match="different settings"):
        run_self_instruct(tmp_path / "out", make_ctx()[0], SelfInstructConfig(
            num_instructions=3, request_batch_size=1, schedule=other))
    ctx, fake = make_ctx()
    m = run_self_instruct(tmp_path / "out", ctx, SelfInstructConfig(num_instructions=9, request_batch_size=1, schedule=schedule))
    second = {"paper": "batch000001-0", "window": "request0000001"}[schedule]
    assert m["accepted_instructions"] == 9 and [r.record_id for r in fake.seen if r.purpose.endswith("bootstrap")] == [second]


def test_include_seeds_and_dataset_seeds(tmp_path):
    ctx, _ = make_ctx()
    m = run_self_instruct(tmp_path / "a", ctx, SelfInstructConfig(num_instructions=2, request_batch_size=1, include_seeds=True))
    kept = rows(tmp_path / "a")
    n_seeds = len(load_seeds().tasks)
    assert sum(r["origin"] == "seed" for r in kept) == n_seeds and m["rows_out"] == n_seeds + 4
    # a dataset folder as the seed pool (what `distill run --input` passes)
    ctx, fake = make_ctx()
    m = run_self_instruct(tmp_path / "b", ctx, SelfInstructConfig(num_instructions=2, request_batch_size=1), seeds=tmp_path / "a")
    assert m["seeds"]["format"] == "dataset" and m["seeds"]["tasks"] == n_seeds + 2


def test_cli_help_and_bad_seed_file(tmp_path):
    from pipeline.cli import app
    runner = CliRunner()
    res = runner.invoke(app, ["self-instruct", "--help"], env={"COLUMNS": "240", "TERMINAL_WIDTH": "240"})
    assert res.exit_code == 0
    for flag in ("--seeds", "--num-instructions", "--mode", "--max-requests", "--patience", "--out"):
        assert flag in res.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "fine fine fine fine"}\n{oops\n')
    res = runner.invoke(app, ["self-instruct", "--seeds", str(bad), "--out", str(tmp_path / "o"),
                              "--workdir", str(tmp_path / "w"), "--no-progress"])
    assert isinstance(res.exception, InputFileError) and "line 2" in str(res.exception)


def test_self_instruct_is_the_first_step_of_the_default_plan():
    from pipeline.plan import default_plan
    step = default_plan()[0]
    assert (step.name, step.name, step.config) == ("self_instruct", "self_instruct", SelfInstructConfig)


def test_plan_step_reads_its_section_and_input(tmp_path):
    from pipeline.config import load_config
    from pipeline.stages.self_instruct.cli import SPEC
    cfg = load_config(overrides={"self_instruct": {"num_instructions": 2, "request_batch_size": 1}})
    ctx, _ = make_ctx()
    m = SPEC.run_step(cfg, None, tmp_path / "si", ctx)
    assert m["accepted_instructions"] == 2 and m["seeds"]["path"].endswith("seed_tasks.jsonl")
    m = SPEC.run_step(cfg, tmp_path / "si", tmp_path / "si2", make_ctx()[0])
    assert m["seeds"]["format"] == "dataset"
