"""Teacher top-k logprobs on the embedded SmolLM2 teacher (real llama.cpp over loopback): the raw server
output against the release's side file (size and accuracy at k = 20), and orca --logprobs 20 -> export
--with-logprobs -> the KD loader. Kept small: the server answers one request at a time on 2 shared cores."""

from __future__ import annotations

import json
import urllib.request

import pytest
from typer.testing import CliRunner

from pipeline import logprobs as L
from pipeline.cli import app
from pipeline.kd import load_soft_targets, teacher_vocab
from pipeline.records import new_row
from pipeline.store import DatasetWriter

pytestmark = pytest.mark.teacher

PROMPTS = ["Explain in detail why the sky is blue.", "Write a long story about a dragon who learns to cook.",
           "Describe, step by step, how to bake bread at home.", "List ten facts about the ocean, one per line."]


def raw_logprobs(base_url: str, prompt: str, max_tokens: int) -> list[dict]:
    body = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "temperature": 0.7, "seed": 1, "logprobs": True, "top_logprobs": 20}
    req = urllib.request.Request(base_url + "/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read())["choices"][0]["logprobs"]["content"]


def test_real_llama_cpp_logprobs_at_k20_fit_96_bytes_a_token_top1_exact_within_005(teacher_server):
    raws = [raw_logprobs(teacher_server, p, 100) for p in PROMPTS]
    m = L.measure(raws, 20)
    print(f"llama.cpp k=20: {m['tokens']} tokens, {m['bytes_per_token']:.1f} B/token in Parquet zstd vs "
          f"{m['raw_json_bytes_per_token']:.0f} B/token raw JSON; max error {m['max_error_nats']:.4f} nats; "
          f"top-1 {m['top1_agree']}/{m['tokens']}")
    assert m["tokens"] >= 250, m  # fewer tokens would be mostly Parquet's fixed overhead
    assert m["bytes_per_token"] <= 96
    assert m["top1_agree"] == m["tokens"] and m["max_error_nats"] <= 0.05


def test_orca_logprobs_export_and_loader_on_the_embedded_teacher(tmp_path, teacher_server):
    w = DatasetWriter(tmp_path / "in", "import")
    w.write_shard(0, [new_row(q, "", "", origin="import") for q in ("What is the capital of France?",
                                                                     "Name a primary colour.")])
    w.write_manifest()
    cfg = tmp_path / "distill.toml"
    cfg.write_text(f'[teacher]\nbackend = "openai"\nbase_url = "{teacher_server}"\nmodel = "smollm2-135m-instruct"\n'
                   'concurrency = 1\ntimeout_s = 300\ncache = false\n\n[orca]\nmax_tokens = 32\ntruncated = "keep"\n'
                   'retry_truncated = false\n')
    runner = CliRunner()
    r = runner.invoke(app, ["orca", str(tmp_path / "in"), "--out", str(tmp_path / "orca"), "--config", str(cfg),
                            "--workdir", str(tmp_path / "w"), "--logprobs", "20", "--no-progress"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["export", str(tmp_path / "orca"), "--out", str(tmp_path / "rel"), "--with-logprobs",
                            "--config", str(cfg), "--no-progress"])
    assert r.exit_code == 0, r.output
    targets = load_soft_targets(tmp_path / "rel", teacher_vocab(tmp_path / "rel"))
    assert len(targets) == 2
    for t in targets:
        assert len(t.ids) > 0 and t.top_ids.shape == (len(t.ids), 20) and (t.top_logprobs[:, 0] <= 0).all()
    pytest.importorskip("torch")
    from test_logprobs import run_kd_example
    r = run_kd_example(tmp_path / "rel", "--student", "gru", "--steps", "5")
    assert r.returncode == 0, r.stderr
    losses = [float(line.split()[-1]) for line in r.stdout.splitlines() if line.startswith("step")]
    assert losses[-1] < losses[0], r.stdout

    # Self-distillation: SmolLM2 itself, read from the teacher's GGUF, with its real tokenizer through the loader.
    r = run_kd_example(tmp_path / "rel", "--student", "smollm2", "--steps", "4", "--batch", "2")
    assert r.returncode == 0, r.stderr
    assert "student: SmolLM2" in r.stdout and "2 answers" in r.stdout, r.stdout
    losses = [float(line.split()[-1]) for line in r.stdout.splitlines() if line.startswith("step")]
    assert len(losses) == 4 and sum(losses[-2:]) / 2 < 0.9 * losses[0], r.stdout
