from typer.testing import CliRunner

from pipeline import records
from pipeline.cli import app
from pipeline.report import build_report
from pipeline.store import DatasetWriter


def _run(tmp_path):
    run = tmp_path / "work" / "r1"
    rows = [records.new_row(f"task {i} " * (i + 1), "", "answer " * (i * 3 + 1), origin="seed") for i in range(10)]
    w = DatasetWriter(run / "self_instruct", "self_instruct")
    w.write_shard(0, rows, [records.rejected_row(records.new_row("bad one", origin="seed"), "self_instruct", "too_short")],
                  {"rows_in": 11, "teacher_prompt_tokens": 100, "teacher_completion_tokens": 40})
    w.write_manifest()
    kept = rows[:6]
    for r in kept:
        r["score"] = float(len(r["output"]))
    dups = [records.rejected_row(dict(r, minhash_cluster=kept[0]["id"]), "minhash", "near_duplicate") for r in rows[6:9]]
    dups.append(records.rejected_row(dict(rows[9], minhash_cluster=kept[1]["id"]), "minhash", "near_duplicate"))
    w = DatasetWriter(run / "orca", "orca")
    w.write_shard(0, rows[:2], None, {"rows_in": 2, "truncation_answers": 8, "truncation_truncated_first": 2,
                                      "truncation_retried": 2, "truncation_still_truncated": 1})
    w.write_manifest()
    w = DatasetWriter(run / "minhash", "minhash")
    w.write_shard(0, kept, dups, {"rows_in": 10})
    w.write_manifest()
    (run / "run_summary.json").write_text(
        '{"steps": [{"stage": "self_instruct"}, {"stage": "orca"}, {"stage": "minhash"}]}')
    return run


def test_report_figures(tmp_path):
    rep = build_report(_run(tmp_path))
    assert [s["stage"] for s in rep["funnel"]] == ["self_instruct", "orca", "minhash"]  # run order, not alphabetical
    funnel = {s["stage"]: s for s in rep["funnel"]}
    assert funnel["self_instruct"]["rows_out"] == 10 and funnel["minhash"]["rejected"] == 4
    assert sorted(rep["clusters"]["minhash"]) == [2, 4]
    assert ["self_instruct", "too_short", 1] in rep["drops"]
    assert {t["stage"]: t["prompt"] for t in rep["tokens"]}["self_instruct"] == 100


def test_report_command_writes_html(tmp_path):
    run = _run(tmp_path)
    res = CliRunner().invoke(app, ["report", str(run)])
    assert res.exit_code == 0, res.output
    page = (run / "report.html").read_text()
    assert page.count("<svg") >= 4 and "near_duplicate" in page and "too_short" in page


def test_report_on_a_release_and_a_releases_folder(tmp_path, monkeypatch):
    from pipeline.stages.export.config import ExportConfig
    from pipeline.stages.export.stage import run_export

    run = _run(tmp_path)
    releases = tmp_path / "releases"
    run_export(run / "minhash", releases / "versions" / "v1", ExportConfig(columns=["id", "instruction", "output", "messages", "origin", "round", "score"]), progress=False)
    (releases / "latest").symlink_to(releases / "versions" / "v1")
    rep = build_report(releases)  # follows `latest`
    assert rep["kind"] == "release" and rep["run_dir"] == str((releases / "versions" / "v1").resolve())
    assert [s["stage"] for s in rep["funnel"]] == ["minhash", "release"]  # the fixture records no input link
    assert rep["funnel"][-1]["rows_out"] == 6 and ["minhash", "near_duplicate", 4] in rep["drops"]
    assert len(rep["lengths"]["output"]) == 6 and len(rep["scores"]["score"]) == 6
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["report", str(releases)])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "report-v1.html").read_text()
    assert "distill release report" in page and "near_duplicate" in page
    assert not (releases / "versions" / "v1" / "report.html").exists()  # a published version is not touched


def test_the_report_shows_each_answering_stage_s_cut_off_answers(tmp_path):
    run = _run(tmp_path)
    rep = build_report(run)
    assert rep["truncation"] == [{"stage": "orca", "answers": 8, "truncated_first": 2, "retried": 2,
                                  "still_truncated": 1, "rate": 0.25, "rate_after_retry": 0.125}]
    res = CliRunner().invoke(app, ["report", str(run)])
    assert res.exit_code == 0, res.output
    page = (run / "report.html").read_text()
    section = page.split("<h2>Cut-off answers</h2>", 1)[1].split("<h2>", 1)[0]
    assert "<td>orca</td>" in section and "25.0%" in section and "12.5%" in section
