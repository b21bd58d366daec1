"""`distill plan` on the embedded demo profile (data/demo.toml, llama.cpp SmolLM2-135M): a tiny pilot of every
stage prints the projection table; the second plan reuses the pilot."""

from __future__ import annotations

import json

import pytest
from bad_input_corpus import run_cli

pytestmark = pytest.mark.teacher


def test_plan_on_the_demo_prints_the_projection_table(tmp_path):
    args = ["plan", "--rows", "1000", "--pilot-rows", "2", "--workdir", str(tmp_path / "work"), "--no-progress"]
    r = run_cli(args)
    assert r.code == 0, (r.out, r.err, r.traceback)
    assert "projected from a pilot of 2 rows (run now" in r.out
    # every stage is in the table, unless one kept none of the pilot's few rows (the note says which)
    assert "self_instruct" in r.out and ("export" in r.out or "kept no rows" in r.out), r.out
    assert "requests per kept row" in r.out or "no row kept" in r.out
    assert "set [teacher] price_prompt_per_mtok" in r.out  # the demo has no prices: the table says how to add them
    pilot = next((tmp_path / "work").glob("pilot-*"))
    proj = json.loads((pilot / "projection.json").read_text())
    assert proj["target_rows"] == 1000 and proj["tokens"] > 0
    first = proj["stages"][0]
    assert first["stage"] == "self_instruct" and first["requests"] > 0 and first["pilot"]["rows_in"] == 2
    assert "Cost projection" in (pilot / "report.html").read_text()
    again = run_cli(args)
    assert again.code == 0 and "(reused:" in again.out, again.err
