"""`distill doctor`: one line per check, a real embedded-teacher request, non-zero with the fix on a failing check."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.doctor import check_disk, cpu_info


@pytest.mark.teacher
def test_doctor_passes_on_this_machine_and_names_what_it_checked(tmp_path):
    r = CliRunner().invoke(app, ["doctor", "--workdir", str(tmp_path / "w")])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    names = [line.split(":")[0][5:] for line in lines]
    assert names == ["cpu", "llama.cpp", "embedded teacher", "torch", "faiss", "ray", "disk", "configured teacher"]
    assert all(line.startswith("ok   ") for line in lines)
    assert "answered a 1-token request" in r.output and "threads" in r.output
    model, feats = cpu_info()
    assert model in lines[0] and all(f in lines[0] for f in feats)


@pytest.mark.teacher
def test_doctor_fails_with_the_fix_when_the_configured_teacher_is_unreachable(tmp_path):
    from pipeline.teacher.server import free_port

    cfg = tmp_path / "distill.toml"
    cfg.write_text(f'[teacher]\nbackend = "openai"\nbase_url = "http://127.0.0.1:{free_port()}/v1"\nmodel = "m"\n')
    r = CliRunner().invoke(app, ["doctor", "--config", str(cfg), "--workdir", str(tmp_path / "w")])
    assert r.exit_code == 1
    out = r.output.splitlines()
    i = next(k for k, line in enumerate(out) if line.startswith("FAIL configured teacher"))
    assert "unreachable" in out[i] and out[i + 1].strip().startswith("fix: ")


def test_low_disk_is_a_failing_check_with_a_fix(tmp_path, monkeypatch):
    import pipeline.doctor as doctor

    monkeypatch.setattr(doctor, "MIN_FREE_BYTES", 1 << 62)
    c = check_disk(tmp_path / "not" / "yet")
    assert not c.ok and "GiB free" in c.detail and "--workdir" in c.fix
