"""The Evol-Instruct stage end to end with a scripted teacher: rounds, pool, drops, lineage, budgets, CLI."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from evol_support import make_input, responder
from typer.testing import CliRunner

from pipeline import records
from pipeline.context import RunContext
from pipeline.stages.evol_instruct import EvolConfig, evolution_chain, format_chain, run_evol_instruct
from pipeline.stages.evol_instruct.stage import pool_dir
from pipeline.store import Dataset
from pipeline.teacher.fake import FakeTeacher


def context(teacher, seed=3):
    return RunContext(run_id="t-run", seed=seed, teacher_factory=lambda: teacher, progress=False)


def rows_of(path):
    return list(Dataset(path).iter_rows())


def rejected_of(path):
    rej = Dataset(path).rejected()
    return list(rej.iter_rows()) if rej else []


MARKER_REASONS = {
    "[leak]": "prompt_leakage", "[long]": "too_long", "[same]": "identical_to_parent",
    "[cut]": "evolution_truncated", "[blank]": "empty_evolution", "[error]": "evolve_error",
    "[equal]": "judged_equal", "[refuse]": "answer_sorry", "[degenerate]": "answer_degenerate",
    "[anscut]": "answer_truncated", "[ansempty]": "answer_empty", "[anserror]": "answer_error",
}


def test_every_elimination_rule_is_a_recorded_drop_with_lineage(tmp_path):
    instructions = [f"Task {m} number {i}." for i, m in enumerate(MARKER_REASONS)]
    instructions += ["Explain how tides work.", "Describe a tidy desk [unclear]."]
    src = make_input(tmp_path / "in", instructions)
    teacher = FakeTeacher(responder)
    m = run_evol_instruct(src, tmp_path / "out", context(teacher), EvolConfig(rounds=1), shard_rows=5)
    inputs = {r["id"]: r for r in rows_of(src)}
    rejected = rejected_of(tmp_path / "out")
    by_marker = {}
    for r in rejected:
        assert r["drop_stage"] == "evol_instruct" and r["drop_detail"]
        parent = inputs[r["parent_id"]]
        assert r["root_id"] == parent["id"] and r["round"] == 1 and r["origin"].startswith("evol:")
        marker = next(k for k in MARKER_REASONS if k in parent["instruction"])
        by_marker[marker] = r["drop_reason"]
    assert by_marker == MARKER_REASONS
    kept = [r for r in rows_of(tmp_path / "out") if r["round"] == 1]
    assert sorted(inputs[r["parent_id"]]["instruction"] for r in kept) == sorted(instructions[-2:])
    assert m["drops"] == dict(Counter(MARKER_REASONS.values()))
    # evolve errors cost no judge/answer; judge failures cost no answer
    purposes = Counter(req.purpose.split(":")[1] for req in teacher.seen)
    assert purposes["evolve"] == len(instructions)
    assert purposes["judge"] == len(instructions) - 6      # leak, long, same, cut, blank, error stop early
    assert purposes["answer"] == purposes["judge"] - 1 + 1  # [equal] is not answered; [anscut] is asked twice


def test_judge_unclear_can_drop(tmp_path):
    src = make_input(tmp_path / "in", ["Describe a tidy desk [unclear]."])
    m = run_evol_instruct(src, tmp_path / "out", context(FakeTeacher(responder)),
                          EvolConfig(rounds=1, judge_unclear="drop"))
    assert m["drops"] == {"judge_unclear": 1}


def test_apology_task_keeps_a_short_sorry_answer(tmp_path):
    src = make_input(tmp_path / "in", ["Write a sorry note to a neighbour [refuse]."])
    m = run_evol_instruct(src, tmp_path / "out", context(FakeTeacher(responder)), EvolConfig(rounds=1))
    assert m["drops"] == {} and m["evolutions_accepted"] == 1


def test_rows_carry_lineage_provenance_and_messages(tmp_path):
    src = make_input(tmp_path / "in", ["Summarise the text."], ["The cat sat on the mat."])
    cfg = EvolConfig(rounds=1, system="You are a careful assistant.")
    run_evol_instruct(src, tmp_path / "out", context(FakeTeacher(responder)), cfg)
    (row,) = [r for r in rows_of(tmp_path / "out") if r["round"] == 1]
    (parent,) = rows_of(src)
    assert row["instruction"].startswith("Summarise the text.\n\nThe cat sat on the mat.")  # input joined in
    assert row["input"] == "" and row["id"] == records.make_id(row["instruction"])
    assert row["parent_id"] == parent["id"] == row["root_id"]
    meta = records.get_meta(row, "evol_instruct")
    assert row["origin"] == f"evol:{meta['operation']}" and meta["stage_round"] == 1
    assert meta["judge_verdict"] == "not_equal" and meta["raw_evolution"].startswith("#Rewritten Prompt#")
    assert row["prompt_template"] == f"evol/{meta['operation']}.txt" and len(row["prompt_hash"]) == 16
    assert row["teacher_backend"] == "fake" and row["teacher_model"] == "fake-teacher"
    sampling = json.loads(row["sampling"])
    assert (sampling["temperature"], sampling["top_p"], sampling["max_tokens"]) == (1.0, 0.95, 2048)
    assert row["output"].startswith("A thorough answer") and row["prompt_tokens"] > 0
    assert row["messages"] == [{"role": "system", "content": "You are a careful assistant."},
                               {"role": "user", "content": row["instruction"]},
                               {"role": "assistant", "content": row["output"]}]
    assert row["system"] == "You are a careful assistant."


def test_lineage_over_rounds_and_failed_parents_stay_in_the_pool(tmp_path):
    instructions = [f"Plan a trip number {i}." for i in range(5)] + ["Plan a picnic [cut-r1]."]
    src = make_input(tmp_path / "in", instructions)
    teacher = FakeTeacher(responder)
    m = run_evol_instruct(src, tmp_path / "out", context(teacher), EvolConfig(rounds=3), shard_rows=4)
    out = rows_of(tmp_path / "out")
    by_id = {r["id"]: r for r in out}
    assert len(by_id) == len(out)
    roots = [r for r in out if r["round"] == 0]
    assert {r["instruction"] for r in roots} == set(instructions)
    for r in out:
        if r["round"] == 0:
            assert r["parent_id"] is None and r["root_id"] == r["id"]
            continue
        parent = by_id[r["parent_id"]]                         # every parent exists
        assert r["round"] == parent["round"] + 1               # depth grows by one along a chain
        assert r["root_id"] == (parent["root_id"] or parent["id"])
        assert r["instruction"].startswith(parent["instruction"])
    # 5 rows evolve in all three rounds; the picnic fails in round 1, stays in the
    # pool and evolves in rounds 2 and 3 (its chain is one shorter).
    assert m["per_round"][0]["evolved"] == 5 and m["per_round"][1]["evolved"] == 6
    assert m["evolutions_accepted"] == 5 * 3 + 2 and m["drops"] == {"evolution_truncated": 1}
    picnic = [r for r in out if "picnic" in r["instruction"]]
    assert sorted(r["round"] for r in picnic) == [0, 1, 2]
    assert [records.get_meta(r, "evol_instruct")["stage_round"] for r in picnic if r["round"]] == [2, 3]
    # the pool keeps its size: each success replaces its parent
    for r in (1, 2, 3):
        assert Dataset(pool_dir(tmp_path / "out", r)).num_rows() == len(instructions)
    assert m["rows_in"] == 6 and m["rows_out"] == 6 + 17 and m["rounds_done"] == 3
    assert m["teacher_calls_per_accepted"] == pytest.approx((18 * 3 - 2) / 17, abs=1e-3)
    # token totals under the names every stage's manifest uses (the report and run summary read them)
    assert m["totals"]["teacher_prompt_tokens"] == sum(p["tokens_prompt"] for p in m["per_round"]) > 0
    assert m["totals"]["teacher_requests"] == 18 * 3 - 2
    # the chain of a round-3 row goes back to its root
    leaf = next(r for r in out if r["round"] == 3)
    chain = evolution_chain(tmp_path / "out", leaf["id"][:10])
    assert [c["round"] for c in chain] == [0, 1, 2, 3] and chain[-1]["id"] == leaf["id"]
    assert chain[0]["id"] == leaf["root_id"]
    text = format_chain(chain)
    assert text.count("round ") == 4 and leaf["id"] in text
    # `distill inspect` counts rows per round and shows a deepest row's chain unasked; --chain takes a prefix
    from collections import Counter

    from typer.testing import CliRunner

    from pipeline.cli import app
    res = CliRunner().invoke(app, ["inspect", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    per_round = Counter(r["round"] for r in out)
    for rnd, n in per_round.items():
        line = next(x for x in res.output.splitlines() if x.startswith(f"  round {rnd}: "))
        assert sum(int(part.rsplit("=", 1)[1]) for part in line.split(": ", 1)[1].split(", ")) == n
    shown = res.output.split("evolution chain, root first")[1].split("sample rows:")[0]
    assert [ln.split()[1] for ln in shown.splitlines() if ln.startswith("  round ")] == ["0", "1", "2", "3"]
    res = CliRunner().invoke(app, ["inspect", str(tmp_path / "out"), "--chain", leaf["id"][:10], "-n", "0"])
    assert res.exit_code == 0 and leaf["id"] in res.output and "sample rows:" not in res.output


def test_keep_parents_in_pool_grows_the_pool(tmp_path):
    src = make_input(tmp_path / "in", ["Plan a trip.", "Cook rice."])
    m = run_evol_instruct(src, tmp_path / "out", context(FakeTeacher(responder)),
                          EvolConfig(rounds=2, keep_parents_in_pool=True))
    assert Dataset(pool_dir(tmp_path / "out", 1)).num_rows() == 4
    assert m["evolutions_accepted"] == 2 + 4


def test_chain_of_a_rejected_row_and_unknown_ids(tmp_path):
    src = make_input(tmp_path / "in", ["Name a river [leak].", "Name a lake."])
    run_evol_instruct(src, tmp_path / "out", context(FakeTeacher(responder)), EvolConfig(rounds=1))
    (rej,) = rejected_of(tmp_path / "out")
    chain = evolution_chain([tmp_path / "out"], rej["id"])
    assert [c["round"] for c in chain] == [0, 1] and chain[-1]["drop_reason"] == "prompt_leakage"
    assert "DROPPED by evol_instruct: prompt_leakage" in format_chain(chain)
    from pipeline.store import DatasetError
    with pytest.raises(DatasetError, match="no row"):
        evolution_chain(tmp_path / "out", "zzzz")


def test_operation_choice_in_the_stage_is_reproducible(tmp_path):
    src = make_input(tmp_path / "in", [f"Describe animal {i}." for i in range(30)])
    ops = []
    for k, seed in enumerate((5, 5, 6)):
        run_evol_instruct(src, tmp_path / f"o{k}", context(FakeTeacher(responder), seed=seed), EvolConfig(rounds=1))
        ops.append([(r["parent_id"], r["origin"]) for r in rows_of(tmp_path / f"o{k}") if r["round"] == 1])
    assert ops[0] == ops[1] and ops[0] != ops[2]
    assert len({o for _, o in ops[0]}) >= 4


def test_max_rows_stops_and_a_higher_budget_continues(tmp_path):
    src = make_input(tmp_path / "in", [f"Plan a trip number {i}." for i in range(5)])
    out = tmp_path / "out"
    first = FakeTeacher(responder)
    m = run_evol_instruct(src, out, context(first), EvolConfig(rounds=2, max_rows=3), shard_rows=2)
    assert m["evolutions_accepted"] == 3 and m["stopped_by"] == "max_rows" and m["rounds_done"] == 0
    assert m["drops"] == {"over_max_rows": 1}                  # shard 2 of round 1 overshot by one
    assert Dataset(out, require_complete=True).num_rows() == 5 + 3
    assert len(first.seen) == 4 * 3                            # two shards of two rows, three calls each
    # the same budget again: nothing to do, no teacher call
    again = FakeTeacher(responder)
    m2 = run_evol_instruct(src, out, context(again), EvolConfig(rounds=2, max_rows=3), shard_rows=2)
    assert again.seen == [] and m2["evolutions_accepted"] == 3
    # no budget: finishes both rounds without redoing the finished shards
    more = FakeTeacher(responder)
    m3 = run_evol_instruct(src, out, context(more), EvolConfig(rounds=2), shard_rows=2)
    assert m3["stopped_by"] is None and m3["rounds_done"] == 2
    done_keys = {(q.record_id, q.purpose) for q in first.seen}
    assert not done_keys & {(q.record_id, q.purpose) for q in more.seen}
    # round 1: 3 kept + the last row (the over-budget evolution left its parent in the pool); round 2: all 5
    assert m3["evolutions_accepted"] == 4 + 5 and m3["drops"] == {"over_max_rows": 1}


def test_max_tokens_total_stops_between_shards(tmp_path):
    src = make_input(tmp_path / "in", [f"Plan a trip number {i}." for i in range(6)])
    t = FakeTeacher(responder)
    m = run_evol_instruct(src, tmp_path / "out", context(t), EvolConfig(rounds=2, max_tokens_total=1), shard_rows=2)
    # the first shard spends past the budget, so no second shard is started
    assert m["stopped_by"] == "max_tokens_total" and m["budget"]["tokens"] > 1
    assert len(t.seen) == 2 * 3 and m["evolutions_accepted"] == 2


# --- the CLI and the plan ------------------------------------------------------

def test_cli_help_lists_the_stage_options():
    from pipeline.cli import app
    res = CliRunner().invoke(app, ["evol-instruct", "--help"])
    assert res.exit_code == 0
    for opt in ("--rounds", "--max-rows", "--max-tokens-total", "--out", "--seed", "--limit", "--shard-rows"):
        assert opt in res.output


def test_cli_runs_the_stage_with_config_and_flags(tmp_path, monkeypatch):
    from pipeline import stage as evol_cli  # the stage commands' one body makes the context
    from pipeline.cli import app

    teacher = FakeTeacher(responder)
    real = evol_cli.make_context

    def with_fake(cfg, paths, progress=True):
        ctx = real(cfg, paths, progress)
        ctx.teacher_factory = lambda: teacher  # the CLI wiring is real; only the teacher is scripted
        return ctx

    monkeypatch.setattr(evol_cli, "make_context", with_fake)
    src = make_input(tmp_path / "in", [f"Plan a trip number {i}." for i in range(4)])
    conf = tmp_path / "distill.toml"
    conf.write_text("[evol_instruct]\nrounds = 3\njudge_max_tokens = 8\n")
    res = CliRunner().invoke(app, ["evol-instruct", str(src), "--config", str(conf), "--workdir", str(tmp_path / "w"),
                                   "--run-id", "r1", "--rounds", "2", "--limit", "3", "--seed", "9", "--no-progress"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "w" / "r1" / "evol_instruct"
    m = Dataset(out, require_complete=True).manifest()
    assert m["rounds"] == 2 and m["rows_in"] == 3 and m["evolutions_accepted"] == 6   # --rounds beats the file
    assert m["settings"]["judge_max_tokens"] == 8 and m["run_id"] == "r1"
    assert "6 evolutions accepted over 2/2 complete rounds" in res.output
    assert all(q.sampling.max_tokens == 8 for q in teacher.seen if q.purpose.startswith("evol:judge"))


def test_cli_bad_input_is_one_line_with_exit_code(tmp_path):
    import subprocess
    import sys
    res = subprocess.run([sys.executable, "-m", "pipeline.cli", "evol-instruct", str(tmp_path / "nope"),
                          "--workdir", str(tmp_path / "w")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 3
    assert res.stderr.strip().count("\n") == 0 and "no such dataset folder" in res.stderr
    bad = tmp_path / "c.toml"
    bad.write_text("[evol_instruct]\noperations = { deepen = 1.0 }\n")
    make_input(tmp_path / "in", ["Plan a trip."])
    res = subprocess.run([sys.executable, "-m", "pipeline.cli", "evol-instruct", str(tmp_path / "in"), "--config", str(bad),
                          "--workdir", str(tmp_path / "w")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "unknown operations" in res.stderr


def test_plan_has_the_step_after_self_instruct(tmp_path):
    from pipeline.config import load_config
    from pipeline.errors import InputFileError
    from pipeline.plan import default_plan

    names = [s.name for s in default_plan()]
    assert "evol_instruct" in names
    if "self_instruct" in names:
        assert names.index("self_instruct") < names.index("evol_instruct")
    step = next(s for s in default_plan() if s.name == "evol_instruct")
    assert step.name == "evol_instruct" and step.config is EvolConfig
    cfg = load_config(None, {"evol_instruct": {"rounds": 1}})
    src = make_input(tmp_path / "in", ["Plan a trip.", "Cook rice."])
    m = step.run_step(cfg, src, tmp_path / "out", context(FakeTeacher(responder)))
    assert m["rounds"] == 1 and m["evolutions_accepted"] == 2
    with pytest.raises(InputFileError):
        step.run_step(cfg, None, tmp_path / "out2", context(FakeTeacher(responder)))


def test_unreachable_teacher_stops_with_one_error_and_keeps_finished_shards(tmp_path):
    from pipeline.errors import TeacherUnavailable
    from pipeline.stages.evol_instruct.stage import round_dir
    from pipeline.teacher.base import TeacherError

    src = make_input(tmp_path / "in", [f"Plan a trip number {i}." for i in range(4)])
    state = {"up": True}

    def flaky(req):
        return responder(req) if state["up"] else TeacherError("connection", "connection refused")

    t = FakeTeacher(flaky)
    orig = t.chat

    def chat(reqs):   # the teacher goes away after the first shard's three calls
        out = orig(reqs)
        if len(t.seen) >= 6:
            state["up"] = False
        return out

    t.chat = chat
    with pytest.raises(TeacherUnavailable, match="did not answer any of 2 requests"):
        run_evol_instruct(src, tmp_path / "out", context(t), EvolConfig(rounds=1), shard_rows=2)
    done = sorted(p.name for p in (round_dir(tmp_path / "out", 1) / "_done").iterdir())
    assert done == ["part-00000.json"] and not (tmp_path / "out" / "_manifest.json").exists()


def test_an_outside_failure_in_one_step_leaves_its_shard_undone_and_the_rerun_finishes(tmp_path):
    """A judge request that timed out is no judge_error drop: the shard it served is not marked done, the
    other shards commit, exit 4 in one line; the rerun evolves every row."""
    from pipeline.errors import TeacherUnavailable
    from pipeline.stages.evol_instruct.stage import round_dir
    from pipeline.teacher.base import TeacherError

    src = make_input(tmp_path / "in", [f"Plan a trip number {i}." for i in range(6)])

    def flaky(req):
        if req.purpose.startswith("evol:judge") and "number 3" in req.messages[-1]["content"]:
            return TeacherError("timeout", "no answer within 120s", attempts=7)
        return responder(req)
    with pytest.raises(TeacherUnavailable, match=r"evol_instruct: 1 rows in 1 shard\(s\) unanswered \(timeout: 1\)"):
        run_evol_instruct(src, tmp_path / "out", context(FakeTeacher(flaky)), EvolConfig(rounds=1), shard_rows=2)
    r1 = round_dir(tmp_path / "out", 1)
    assert sorted(p.name for p in (r1 / "_done").iterdir()) == ["part-00000.json", "part-00002.json"]
    assert not list(r1.glob("rejected/*.parquet")) or not [
        r for r in rejected_of(tmp_path / "out") if r["drop_reason"] == "judge_error"]
    m = run_evol_instruct(src, tmp_path / "out", context(FakeTeacher(responder)), EvolConfig(rounds=1), shard_rows=2)
    assert m["evolutions_accepted"] == 6 and m["drops"] == {}


@pytest.mark.parametrize("keep_parents", [False, True])
def test_next_pool_from_the_kept_rows_is_the_evolvers_own_pool(tmp_path, keep_parents):
    """The Ray executor rebuilds each pool shard from the round's kept rows; it must be the local pool exactly."""
    from pipeline.stages.evol_instruct.operations import Operations
    from pipeline.stages.evol_instruct.shard import ShardEvolver, next_pool

    instructions = [f"Plan a trip number {i}." for i in range(6)] + ["Plan a picnic [cut-r1].", "Plan a trip number 0."]
    src = make_input(tmp_path / "in", instructions)
    rows = list(Dataset(src).iter_rows())
    cfg = EvolConfig(keep_parents_in_pool=keep_parents)
    res = ShardEvolver(cfg, Operations(cfg)).run(rows, 1, context(FakeTeacher(responder)))
    assert res.rejected and res.kept                       # both kinds present
    assert next_pool(rows, res.kept, keep_parents) == res.pool
    with pytest.raises(ValueError, match="no parent"):
        next_pool(rows[:2], res.kept, keep_parents)


def test_budgets_need_the_local_executor(tmp_path):
    from pipeline.errors import ConfigError
    src = make_input(tmp_path / "in", ["Plan a trip."])
    ctx = RunContext(run_id="t", seed=1, teacher_factory=lambda: FakeTeacher(responder), progress=False,
                       executor="ray")
    with pytest.raises(ConfigError, match="--executor local"):
        run_evol_instruct(src, tmp_path / "out", ctx, EvolConfig(max_rows=3))
