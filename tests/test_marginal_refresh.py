"""The marginal-return curve of two real refresh nights (scripted teacher): one point per night in the report."""

from __future__ import annotations

import json

from pipeline.report import write_report
from tests.test_refresh import _fake_config, _night


def test_a_two_night_refresh_report_shows_the_curve_over_the_nights(tmp_path):
    cfg = _fake_config(tmp_path)
    r1, _ = _night(cfg)
    cfg.self_instruct = {"num_instructions": 6, "request_batch_size": 1}  # more tasks: some are new, most are not
    r2, _ = _night(cfg)
    s1, s2 = (json.loads((tmp_path / "w" / r.run_id / "refresh_summary.json").read_text())["rows"] for r in (r1, r2))
    page = write_report(tmp_path / "w" / r2.run_id).read_text()
    section = page[page.index("Per refresh night"):]
    per_1k = [round(1000 * s["after_dedup"] / s["generated"], 1) for s in (s1, s2)]
    assert per_1k[1] < per_1k[0]  # the second night mostly repeats the first
    assert f"Novel rows per 1k generated went from {per_1k[0]:.0f} to {per_1k[1]:.0f}" in section
    assert f"<td>{r1.run_id}</td>" in section and f"<td>{r2.run_id}</td>" in section
    assert section.count("<polyline") >= 2
