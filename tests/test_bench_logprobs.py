"""scripts/bench_logprobs.py runs against a loopback OpenAI-compatible stand-in (--base-url) and prints the
release's bytes per token against the raw JSON, their ratio, top-1 agreement and the largest error. The
embedded llama.cpp teacher, its default, is measured by the k = 20 teacher test (same `measure`)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from reasoning_server import ReasoningServer

ROOT = Path(__file__).resolve().parents[1]
WORDS = 150


def long_reply(question: str) -> tuple[str, str]:
    words = " ".join(f"word{(len(question) * 7 + i * 13) % 97}" for i in range(WORDS))
    return "", f"Here is a long answer. {words}"


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_logprobs.py"), *args],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_bench_prints_the_ratio_and_exact_top1_against_a_stand_in_server():
    srv = ReasoningServer("field", reply=long_reply)
    try:
        r = bench("--base-url", srv.base_url, "--n", "3")
    finally:
        srv.close()
    assert r.returncode == 0, r.stdout + r.stderr
    assert srv.received == 3
    tokens = 3 * (WORDS + 5)  # "Here is a long answer." and the words, one position each
    assert f"tokens: {tokens}\n" in r.stdout
    ratio = re.search(r"^ratio: release / raw JSON = ([0-9.]+) \(", r.stdout, re.M)
    side = re.search(r"^release side file \(Parquet zstd\): ([0-9.]+) B/token", r.stdout, re.M)
    raw = re.search(r"^raw server JSON: ([0-9.]+) B/token", r.stdout, re.M)
    assert ratio and side and raw, r.stdout
    assert abs(float(ratio.group(1)) - float(side.group(1)) / float(raw.group(1))) < 1e-3
    assert float(side.group(1)) <= 96 < float(raw.group(1))
    assert f"top-1 agreement: {tokens}/{tokens} (exact)" in r.stdout
    err = float(re.search(r"max \|error\| of the kept logprobs: ([0-9.]+) nats", r.stdout).group(1))
    assert 0 < err <= 1 / 128 + 1e-4  # the quantisation's half step, no more


def test_bench_says_in_one_line_when_the_server_cannot_be_reached():
    r = bench("--base-url", "http://127.0.0.1:9/v1", "--n", "1")
    assert r.returncode == 4 and "cannot reach http://127.0.0.1:9/v1" in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
