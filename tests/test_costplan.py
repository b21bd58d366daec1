"""`distill plan`: a 100-row pilot against a deterministic loopback teacher projects a 1,000-row run's
teacher tokens and kept rows within 20%; a second plan reuses the pilot without a request; the table
and the report show the projection; prices are required in pairs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from costplan_support import StandIn
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import ConfigError, load_config
from pipeline.context import RunPaths
from pipeline.costplan import plan, target_rows
from pipeline.costtable import table
from pipeline.importer import import_file
from pipeline.report import write_report
from pipeline.runplan import run_plan
from pipeline.teacher.pricing import Prices

VOCAB = ("apple bridge candle desert engine forest garden harbor island jungle kettle ladder marble needle "
         "ocean pencil quartz rocket saddle tunnel umbrella valley wagon yacht zebra anchor basket castle "
         "dragon feather glacier hammer insect jacket kitten lemon mirror nickel orchard parrot quiver rabbit "
         "silver tiger violin walnut pepper copper meadow lantern summer winter autumn spring cotton velvet "
         "thunder shadow crystal planet comet signal market ticket button pocket circle square triangle "
         "history science poetry music theatre cooking travel finance weather climate energy").split()
VERBS = ("Explain", "Describe", "Summarize", "Compare", "List facts about", "Write a note on", "Teach a child about",
         "Give advice on")


def _instructions(n: int) -> list[str]:
    """Distinct instructions, every tenth a near-copy of the one before (MinHash drops it)."""
    out: list[str] = []
    for i in range(n):
        if i % 10 == 9:
            out.append(out[-1] + " please")
            continue
        r = random.Random(i)
        out.append(f"{r.choice(VERBS)} the {' '.join(r.sample(VOCAB, 9))} (item {i}).")
    return out


def _setup(tmp_path: Path, url: str, n: int = 1000) -> tuple[Path, Path]:
    src = tmp_path / "tasks.jsonl"
    src.write_text("".join(json.dumps({"instruction": t}) + "\n" for t in _instructions(n)))
    ds = tmp_path / "tasks"
    import_file(src, ds, run_id="import", shard_rows=500)
    conf = tmp_path / "distill.toml"
    conf.write_text(f"""
[run]
workdir = "{tmp_path / 'work'}"
shard_rows = 50
[teacher]
backend = "openai"
base_url = "{url}"
model = "standin"
concurrency = 8
price_prompt_per_mtok = 2.50
price_completion_per_mtok = 10.00
[pipeline]
skip = ["self_instruct", "evol_instruct"]
[orca]
max_tokens = 40
[semdedup]
fast = true
[select]
fast = true
[score]
judge = "none"
""")
    return conf, ds


def test_pilot_projection_is_within_20_percent_of_a_real_run(tmp_path, capsys):
    with StandIn() as server:
        conf, ds = _setup(tmp_path, server.base_url)
        cfg = load_config(conf)
        proj = plan(cfg, 1000, pilot_rows=100, input=ds, progress=False, echo=lambda s: None)
        assert not proj["pilot_reused"] and server.requests > 100  # the pilot asked (orca answers + retries)
        pilot_tokens = server.tokens

        # the real run at 1,000 rows, with its own fresh response cache: every request is sent and counted
        server.reset()
        real = load_config(conf)
        real.teacher.cache_path = str(tmp_path / "real_cache.sqlite")
        summary = run_plan(real, RunPaths(tmp_path / "work", "real"), input=ds, progress=False, echo=lambda s: None)
        actual_tokens, actual_kept = server.tokens, summary["final_rows"]

        tok_err = proj["tokens"] / actual_tokens - 1
        kept_err = proj["kept_rows"] / actual_kept - 1
        with capsys.disabled():
            print(f"\n[costplan accuracy] pilot 100 rows ({pilot_tokens} tokens) -> projected {proj['tokens']:.0f} tokens, "
                  f"{proj['kept_rows']:.1f} kept; actual 1000 rows: {actual_tokens} tokens, {actual_kept} kept; "
                  f"errors: tokens {100 * tok_err:+.1f}%, kept {100 * kept_err:+.1f}%")
        assert abs(tok_err) <= 0.2 and abs(kept_err) <= 0.2
        # the yields are not trivial: the pilot dropped rows in answering and in dedup
        by_stage = {s["stage"]: s for s in proj["stages"]}
        assert by_stage["orca"]["yield"] < 0.9 and by_stage["semdedup"]["yield"] < 0.98
        assert 0 < actual_kept < 1000
        cost = proj["cost"]
        expected = Prices(2.5, 10.0).cost(proj["prompt_tokens"], proj["completion_tokens"])
        assert cost["online"] == pytest.approx(expected) and cost["batch"] == pytest.approx(expected / 2)
        assert cost["online_per_kept_row"] == pytest.approx(expected / proj["kept_rows"])

        # a second plan reuses the pilot: no request, the same projection, the table on stdout
        server.reset()
        res = CliRunner().invoke(app, ["plan", "-c", str(conf), "--rows", "1000", "--pilot-rows", "100",
                                       "--input", str(ds), "--no-progress"])
        assert res.exit_code == 0, res.output
        assert server.requests == 0
        assert "reused" in res.stdout and "per kept row" in res.stdout and "orca" in res.stdout
        assert "batch" in res.stdout and "$" in res.stdout

        # the report of the pilot folder shows it
        html = write_report(Path(proj["pilot_dir"])).read_text()
        assert "Cost projection" in html and "per kept row" in html


def test_table_without_prices_says_how_to_price(tmp_path):
    p = {"target_rows": 10, "pilot_rows": 2, "pilot_reused": False, "pilot_dir": str(tmp_path), "backend": "openai",
         "model": "m", "kept_rows": 4.0, "requests": 20.0, "prompt_tokens": 100.0, "completion_tokens": 50.0,
         "tokens": 150.0, "requests_per_kept_row": 5.0, "wall_seconds": 3.0, "rate_limit_floor_seconds": 0.0,
         "concurrency": 4, "cost": None,
         "stages": [{"stage": "orca", "yield": 0.4, "rows_in": 10.0, "rows_out": 4.0, "requests": 20.0,
                     "prompt_tokens": 100.0, "completion_tokens": 50.0, "seconds": 3.0}]}
    text = table(p)
    assert "price_prompt_per_mtok" in text and "40.0%" in text and "5.00 requests per kept row" in text


def test_target_size_and_prices_are_checked(tmp_path):
    assert target_rows(None, "1m") == 1_000_000 and target_rows(500, None) == 500
    for rows, tier in ((None, None), (5, "1m"), (None, "5m")):
        with pytest.raises(ConfigError):
            target_rows(rows, tier)
    conf = tmp_path / "c.toml"
    conf.write_text("[teacher]\nprice_prompt_per_mtok = 1.0\n")
    with pytest.raises(ConfigError, match="set both price_prompt_per_mtok and price_completion_per_mtok"):
        load_config(conf)
    conf.write_text("[teacher]\nprice_prompt_per_mtok = 1.0\nprice_completion_per_mtok = 2.0\nbatch_discount = 1.0\n")
    with pytest.raises(ConfigError, match="batch_discount"):
        load_config(conf)


def test_projection_chains_the_stages_and_keeps_seeds_and_select_budget_fixed():
    from pipeline.config import TeacherSection
    from pipeline.costplan import StageMeasure, project

    pilot = [StageMeasure("self_instruct", 10, 30, requests=20, prompt_tokens=2000, completion_tokens=1000,
                          seconds=4.0, fixed_rows=20),   # 20 seeds written alongside 10 new tasks
             StageMeasure("orca", 30, 15, requests=30, prompt_tokens=300, completion_tokens=600, seconds=3.0),
             StageMeasure("select", 15, 15)]
    section = TeacherSection(backend="openai", rpm=60, price_prompt_per_mtok=1.0, price_completion_per_mtok=2.0)
    p = project(pilot, 1000, section, select_budget=400)
    si, orca, sel = p["stages"]
    assert si["rows_out"] == pytest.approx(1020)        # 1000 new tasks + the same 20 seeds
    assert si["requests"] == pytest.approx(2000) and si["prompt_tokens"] == pytest.approx(200_000)
    assert orca["rows_in"] == pytest.approx(1020) and orca["rows_out"] == pytest.approx(510)
    assert orca["requests"] == pytest.approx(1020)
    assert sel["rows_out"] == 400 and p["kept_rows"] == 400  # select's budget caps the projection
    assert p["rate_limit_floor_seconds"] == pytest.approx(3020)  # 3,020 requests at 60 a minute
    assert p["wall_seconds"] == pytest.approx(3020)
    tokens_p, tokens_c = 200_000 + 10_200, 100_000 + 20_400
    assert p["cost"]["online"] == pytest.approx((tokens_p * 1.0 + tokens_c * 2.0) / 1e6)
    assert p["requests_per_kept_row"] == pytest.approx(3020 / 400)
