"""`distill teacher serve --help` and `distill teacher ping` through typer's CliRunner."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import TeacherUnavailable

runner = CliRunner()


def test_teacher_help_lists_serve_and_ping():
    r = runner.invoke(app, ["teacher", "--help"])
    assert r.exit_code == 0 and "serve" in r.output and "ping" in r.output
    r = runner.invoke(app, ["teacher", "serve", "--help"])
    assert r.exit_code == 0 and "--port" in r.output and "OpenAI-compatible" in r.output
    r = runner.invoke(app, ["teacher", "ping", "--help"])
    assert r.exit_code == 0 and "--base-url" in r.output


@pytest.mark.teacher
def test_ping_openai_backend_against_embedded_server(teacher_server):
    r = runner.invoke(app, ["teacher", "ping", "--backend", "openai", "--base-url", teacher_server,
                            "--max-tokens", "8"])
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert lines[0].strip()  # the answer
    assert "backend=openai model=smollm2-135m-instruct" in lines[-1] and "latency=" in lines[-1]
    assert "completion_tokens=" in lines[-1] and "completion_tokens=0 " not in lines[-1]


@pytest.mark.teacher
def test_ping_embedded_llamacpp_from_config(tmp_path):
    cfg = tmp_path / "distill.toml"
    cfg.write_text('[teacher]\nbackend = "llamacpp"\nn_ctx = 256\nn_threads = 2\n')
    r = runner.invoke(app, ["teacher", "ping", "--config", str(cfg), "--max-tokens", "6"])
    assert r.exit_code == 0, r.output
    assert "backend=llamacpp model=smollm2-135m-instruct" in r.output and "prompt_tokens=" in r.output


def test_ping_unreachable_teacher_is_teacher_unavailable():
    from pipeline.teacher.server import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    r = runner.invoke(app, ["teacher", "ping", "--backend", "openai", "--base-url", url])
    assert isinstance(r.exception, TeacherUnavailable)
    msg = str(r.exception)
    assert "\n" not in msg and url in msg and "distill teacher serve" in msg


def test_ping_unreachable_exit_code_through_main(monkeypatch, capsys):
    import sys

    from pipeline.cli import main
    from pipeline.teacher.server import free_port

    monkeypatch.setattr(sys, "argv", ["distill", "teacher", "ping", "--backend", "openai",
                                      "--base-url", f"http://127.0.0.1:{free_port()}/v1", "--model", "m"])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 4
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
