"""A non-editable install must find prompts/ and data/ (they ship inside the wheel)."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_carries_prompts_and_data(tmp_path):
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    wheel = next(tmp_path.glob("distill-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    shipped_prompts = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "prompts").rglob("*") if p.is_file())
    shipped_data = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "data").rglob("*") if p.is_file())
    for rel in shipped_prompts + shipped_data:
        assert f"pipeline/_assets/{rel}" in names, rel
    # Installed without the checkout next to it, the package resolves its assets inside itself.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = "from pipeline.assets import prompts_dir, data_dir; print(prompts_dir()); print(data_dir())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    p, d = out.stdout.split()
    assert p == str(site / "pipeline" / "_assets" / "prompts") and d == str(site / "pipeline" / "_assets" / "data")
