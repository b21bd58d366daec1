"""The report opened in a real headless Chromium: every chart renders, and a screenshot is not blank.

`make test` installs Debian's chromium where it can (root with apt); where no
browser exists the test is skipped with that reason, unless
DISTILL_REQUIRE_BROWSER=1 (set by `make test` after installing it), which
turns the missing browser into a failure.
"""

import json
import os
import re
import shutil
import subprocess

import pytest

from pipeline import records
from pipeline.report import write_report
from pipeline.store import DatasetWriter
from tests.test_report import _run

CHECK = """
<script>
window.addEventListener('load', () => {
  const svgs = [...document.querySelectorAll('svg')];
  const drawn = svgs.filter(s => { const b = s.getBoundingClientRect(); return b.width > 50 && b.height > 20; });
  const bars = [...document.querySelectorAll('svg rect')].filter(r => r.getBBox().width > 0 && r.getBBox().height > 0);
  const lines = [...document.querySelectorAll('svg polyline')].filter(l => l.getBBox().width > 0);
  const out = document.createElement('pre');
  out.id = 'check';
  out.textContent = JSON.stringify({svgs: svgs.length, drawn: drawn.length, bars: bars.length, lines: lines.length,
                                    headings: [...document.querySelectorAll('h2')].map(h => h.textContent)});
  document.body.appendChild(out);
});
</script>
"""


def _browser() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        if os.environ.get("DISTILL_REQUIRE_BROWSER") == "1":
            pytest.fail("DISTILL_REQUIRE_BROWSER=1 but no chromium on PATH (apt-get install chromium)")
        pytest.skip("no chromium on PATH: `make test` installs Debian's chromium where it can")
    return exe


def _chromium(exe: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--no-first-run", "--hide-scrollbars", *args],
                          capture_output=True, text=True, timeout=120)


def _with_evolution(run):
    rows = [records.new_row("Explain tides.", origin="seed")]
    for rnd, op in enumerate(["deepening", "add_constraints", "breadth"], start=1):
        rows.append(records.new_row(f"Explain tides, step {rnd}.", "", "Because of the moon.", origin=f"evol:{op}",
                                    parent_id=rows[-1]["id"], round=rnd))
    w = DatasetWriter(run / "evol_instruct", "evol_instruct")
    w.write_shard(0, rows, [], {"rows_in": 1})
    w.write_manifest()
    return run


def _with_two_generation_shards(run):
    """minhash's input (orca) as two shards of the ten rows, so the marginal-return curves have two points."""
    shutil.rmtree(run / "orca")
    rows = [records.new_row(f"task {i} " * (i + 1), "", "answer " * (i * 3 + 1), origin="seed") for i in range(10)]
    w = DatasetWriter(run / "orca", "orca")
    w.write_shard(0, rows[:5], None, {"rows_in": 5})
    w.write_shard(1, rows[5:], None, {"rows_in": 5})
    w.write_manifest()
    return run


def test_report_renders_in_headless_chromium(tmp_path):
    exe = _browser()
    run = _with_two_generation_shards(_with_evolution(_run(tmp_path)))
    page = write_report(run)
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", CHECK + "</body>"))
    res = _chromium(exe, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    m = re.search(r'<pre id="check">(.*?)</pre>', res.stdout, re.S)
    assert m, f"the page did not finish loading in Chromium: {res.stdout[:500]} {res.stderr[-500:]}"
    check = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert check["svgs"] >= 6 and check["drawn"] == check["svgs"], check  # every chart has a laid-out size
    assert check["bars"] >= 10, check
    assert check["lines"] >= 2, check  # the marginal-return curves: minhash's input has two shards here
    for heading in ("Funnel", "Drops by reason", "Scores", "Evolution", "Dedup clusters", "Token cost",
                    "Marginal return"):
        assert any(h.startswith(heading) for h in check["headings"]), (heading, check["headings"])

    shot = tmp_path / "report.png"
    res = _chromium(exe, f"--screenshot={shot}", "--window-size=1000,2400", page.as_uri())
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    from PIL import Image
    img = Image.open(shot).convert("RGB").resize((200, 480))
    colours = img.getcolors(maxcolors=200 * 480)
    non_white = sum(n for n, c in colours if sum(c) < 700)
    assert non_white > 0.02 * 200 * 480, f"screenshot is nearly blank ({non_white} dark pixels)"
    keep = os.environ.get("DISTILL_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
