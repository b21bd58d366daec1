"""semdedup on real rows from ../shared/data: approximate search recall against exact, and the dolly run."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.realdata


def real_texts(shared_data) -> list[str]:
    texts = []
    for name in ("dolly_3k.json", "alpaca_helpfulness_2k.json"):
        for r in json.loads((shared_data / name).read_text()):
            texts.append(r["instruction"] if not r.get("input") else f"{r['instruction']}\n\n{r['input']}")
    return texts


def perturbed(texts: list[str], seed: int = 0) -> list[str]:
    """Every fifth text again with a word dropped and two letters swapped: planted near-duplicates."""
    rng = np.random.default_rng(seed)
    out = []
    for t in texts[::5]:
        words = t.split(" ")
        if len(words) > 4:
            del words[int(rng.integers(1, len(words)))]
        k = int(rng.integers(0, len(words)))
        w = words[k]
        if len(w) > 3:
            words[k] = w[0] + w[2] + w[1] + w[3:]
        out.append(" ".join(words))
    return out


@pytest.fixture(scope="module")
def fast():
    from pipeline.embeddings.embedder import load_embedder
    return load_embedder("minilm", fast=True)


def test_approximate_search_recall_against_exact_on_real_rows(shared_data, fast):
    from pipeline.stages.semdedup.search import exact_pairs, ivf_pairs, kmeans_pairs, pair_recall
    texts = real_texts(shared_data)
    texts += perturbed(texts)
    x = fast.encode(texts)
    assert len(x) > 5000
    truth = exact_pairs(x, 0.92)
    assert len(truth) > 500  # the planted copies, plus the data's own near-duplicates
    ivf = ivf_pairs(x, 0.92)
    km = kmeans_pairs(x, 0.92, k=8)
    r_ivf, r_km = pair_recall(ivf, truth), pair_recall(km, truth)
    print(f"\nrows={len(x)} exact_pairs={len(truth)} ivf_recall={r_ivf:.4f} kmeans(k=8)_recall={r_km:.4f}")
    assert ivf.as_set() <= truth.as_set() and km.as_set() <= truth.as_set()  # approximate never invents pairs
    assert r_ivf >= 0.99
    assert r_km >= 0.9


def test_dolly_import_semdedup_inspect(shared_data, tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app
    from pipeline.store import Dataset
    runner = CliRunner()
    wd = ["--workdir", str(tmp_path), "--run-id", "r1"]
    res = runner.invoke(app, ["import", str(shared_data / "dolly_3k.json"), *wd])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["semdedup", str(tmp_path / "r1" / "import"), "--fast", "--no-progress", *wd])
    assert res.exit_code == 0, res.output
    out = tmp_path / "r1" / "semdedup"
    m = json.loads((out / "_manifest.json").read_text())
    assert m["rows_in"] == 2996 and m["rows_rejected"] > 0
    assert m["rows_out"] + m["rows_rejected"] == m["rows_in"]
    rej = Dataset(out).rejected().read().to_pylist()
    kept_ids = {r["id"] for r in Dataset(out).read(columns=["id"]).to_pylist()}
    assert all(r["semdedup_cluster"] in kept_ids for r in rej)
    res = runner.invoke(app, ["inspect", str(out), "--rejected", "-n", "2"])
    assert res.exit_code == 0 and "semantic_duplicate" in res.output and "near-duplicate of" in res.output
