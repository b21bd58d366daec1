"""Spend caps in money: the Budget's cost counting, its reservations for batches, and `--max-cost` on
`distill run` (stops with exit 7, loses nothing, pays nothing twice on the rerun) and `distill refresh`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bad_input_corpus import run_cli
from costplan_support import StandIn
from test_costplan import _instructions

from pipeline.errors import BudgetExhausted
from pipeline.importer import import_file
from pipeline.teacher.base import ChatRequest, Sampling
from pipeline.teacher.budget import Budget, BudgetedTeacher
from pipeline.teacher.fake import FakeTeacher
from pipeline.teacher.pricing import Prices

PRICES = Prices(prompt_per_mtok=2.0, completion_per_mtok=8.0, batch_discount=0.5)


def test_spend_is_counted_in_money_and_the_cap_is_a_limit():
    b = Budget().cap_cost(0.01, PRICES)
    b.spend(1000, 500, 1)  # 0.002 + 0.004
    assert b.cost == pytest.approx(0.006) and b.exhausted_by is None and b.enforced
    b.spend(0, 500, 1, batch=True)  # 0.004 * 0.5
    assert b.cost == pytest.approx(0.008)
    b.spend(1000, 0, 1)
    assert b.exhausted_by == "cost" and b.cost_left() == 0
    assert b.to_dict()["cost"] == pytest.approx(0.01) and b.to_dict()["max_cost"] == 0.01
    assert Budget().cap_cost(None, PRICES).enforced is False  # counting only
    batch = Budget().cap_cost(1.0, PRICES, batch=True)  # a batch backend's run: counted at the batch price
    batch.spend(1000, 500, 1)
    assert batch.cost == pytest.approx(0.003)
    batch.spend(1000, 500, 1, batch=False)
    assert batch.cost == pytest.approx(0.009)
    with pytest.raises(ValueError):
        Budget().cap_cost(1.0, None)


@pytest.mark.parametrize("resumable,kind", [(True, "budget_paused"), (False, "budget_exhausted")])
def test_the_teacher_refuses_past_the_cap_a_run_is_resumable_a_night_is_not(resumable, kind):
    b = Budget().cap_cost(0.00001, PRICES, resumable=resumable)
    t = BudgetedTeacher(FakeTeacher(lambda req: "an answer of six words here"), b, wave=2)
    reqs = [ChatRequest([{"role": "user", "content": f"q{i}"}], Sampling(max_tokens=16)) for i in range(6)]
    out = t.chat(reqs)
    sent = [c for c in out if c.error is None]
    refused = [c for c in out if c.error is not None]
    assert len(sent) == 2 and len(refused) == 4 and b.refused == 4 and b.hit == ["cost"]
    assert {c.error.kind for c in refused} == {kind} and "cost spent" in refused[0].error.message
    assert all(c.unanswered for c in refused) is resumable  # a run's refused rows are asked again next time


def test_a_batch_reserves_its_worst_case_before_submission_and_settles_at_the_batch_price():
    b = Budget().cap_cost(0.05, PRICES)
    reqs = [ChatRequest([{"role": "user", "content": "x" * 400}], Sampling(max_tokens=1000)) for _ in range(10)]
    worst = b.worst_case_cost(reqs)
    # about 100 prompt tokens + 1000 max_tokens per request, at half price
    assert worst == pytest.approx(PRICES.cost(10 * 100, 10 * 1000, batch=True), rel=0.1)
    b.reserve_cost(worst)
    assert b.reserved_cost == pytest.approx(worst) and b.cost == 0
    with pytest.raises(BudgetExhausted, match="does not fit"):  # a second one would overshoot the cap: refused
        b.reserve_cost(worst)
    assert b.reserved_cost == pytest.approx(worst) and "cost" in b.hit
    b.settle_cost(worst, prompt=1000, completion=2000, requests=10)
    assert b.reserved_cost == 0 and b.cost == pytest.approx(PRICES.cost(1000, 2000, batch=True))
    b.reserve_cost(0.01)
    b.release_cost(0.01)
    assert b.reserved_cost == 0
    # reservations count against the cap for online requests too
    held = Budget().cap_cost(0.01, PRICES)
    held.reserve_cost(0.01)
    assert held.exhausted_by == "cost"


def _orca_config(tmp: Path, url: str, prices: bool = True) -> Path:
    conf = tmp / "distill.toml"
    price = "price_prompt_per_mtok = 2.0\nprice_completion_per_mtok = 8.0\n" if prices else ""
    conf.write_text(f"""
[run]
workdir = "{tmp / 'work'}"
shard_rows = 50
[teacher]
backend = "openai"
base_url = "{url}"
model = "standin"
concurrency = 4
cache_path = "{tmp / 'cache.sqlite'}"
{price}
[pipeline]
skip = ["self_instruct", "evol_instruct", "minhash", "semdedup", "select"]
[orca]
max_tokens = 40
[score]
judge = "none"
""")
    return conf


def _tasks(tmp: Path, n: int = 120) -> Path:
    src = tmp / "tasks.jsonl"
    src.write_text("".join(json.dumps({"instruction": t}) + "\n" for t in _instructions(n)))
    import_file(src, tmp / "tasks", run_id="import", shard_rows=500)
    return tmp / "tasks"


def test_run_max_cost_stops_with_exit_7_and_the_rerun_loses_nothing_and_pays_nothing_twice(tmp_path):
    with StandIn() as server:
        ref_dir, cap_dir = tmp_path / "ref", tmp_path / "cap"
        ref_dir.mkdir()
        cap_dir.mkdir()
        ds = _tasks(tmp_path)
        ref = run_cli(["run", "-c", str(_orca_config(ref_dir, server.base_url)), "--input", str(ds),
                       "--no-progress", "--no-report"])
        assert ref.code == 0, ref.err
        paid_ref = server.requests - 1  # less the ping

        server.reset()
        conf = _orca_config(cap_dir, server.base_url)
        capped = run_cli(["run", "-c", str(conf), "--input", str(ds), "--no-progress", "--no-report",
                          "--max-cost", "0.01"])
        assert capped.code == 7, (capped.out, capped.err)
        errors = [ln for ln in capped.err.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and "cost cap reached" in errors[0] and "--max-cost" in errors[0], capped.err
        spent = PRICES.cost(server.prompt_tokens, server.completion_tokens)
        assert 0.01 <= spent <= 0.01 + 0.004  # at most one wave (4 requests) past the cap
        paid_capped = server.requests - 1
        assert 0 < paid_capped < paid_ref
        run_dir = next((cap_dir / "work").glob("run-*"))
        assert not (run_dir / "orca" / "_manifest.json").exists()  # the stage is unfinished, not done with drops

        rerun = run_cli(["run", "-c", str(conf), "--input", str(ds), "--no-progress", "--no-report"])
        assert rerun.code == 0, rerun.err
        paid_rerun = server.requests - 2 - paid_capped
        assert paid_capped + paid_rerun == paid_ref  # what the capped run paid for was not asked again
        orca = json.loads((run_dir / "orca" / "_manifest.json").read_text())
        assert "budget_paused" not in orca["drops"] and "budget_exhausted" not in orca["drops"]
        ref_orca = json.loads(next((ref_dir / "work").glob("run-*/orca/_manifest.json")).read_text())
        assert orca["rows_out"] == ref_orca["rows_out"] and orca["drops"] == ref_orca["drops"]


def test_max_cost_without_prices_is_one_config_error(tmp_path):
    ds = _tasks(tmp_path, 20)
    conf = _orca_config(tmp_path, "http://127.0.0.1:9/v1", prices=False)
    for cmd in (["run", "--input", str(ds)], ["refresh"]):
        r = run_cli([*cmd, "-c", str(conf), "--max-cost", "5", "--no-progress"])
        errors = [ln for ln in r.err.splitlines() if ln.startswith("error:")]
        assert r.code == 2 and len(errors) == 1 and "price_prompt_per_mtok" in errors[0], (cmd, r.err)
