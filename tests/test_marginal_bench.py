"""scripts/bench_marginal.py at a small target: a real `distill run` against the recombined-Dolly loopback
teacher stops generating on `[run] min_novelty`, still releases, and prints the curve."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.realdata
def test_the_bench_run_stops_on_min_novelty_and_prints_the_curve(shared_data, tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_marginal.py"), "--target", "600",
                          "--shard-tasks", "30", "--data", str(shared_data), "--keep", str(tmp_path / "b")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    text = out.stdout
    rows = [ln.split() for ln in text.splitlines() if re.match(r"\s+shard \d+ ", ln)]
    assert len(rows) >= 3, text
    generated = [int(r[3].replace(",", "")) for r in rows]
    novel = [float(r[4]) for r in rows]
    assert generated == sorted(generated) and generated[-1] >= 600
    assert novel[0] > 800 and novel[-1] < 250 <= min(novel[:-1]), text   # the stop fired on the first shard under
    stop = re.search(r"^stop: self_instruct stopped generating: its shard (\d+) added ([\d.]+) novel rows per 1k "
                     r"generated, under \[run\] min_novelty = 250 \(([\d,]+) rows generated\)$", text, re.M)
    assert stop and int(stop[1]) == len(rows) - 1 and float(stop[2]) == novel[-1], text
    assert int(stop[3].replace(",", "")) == generated[-1]
    assert re.search(r"^release: [\d,]+ rows in .*export", text, re.M), text
