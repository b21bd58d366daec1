"""MinHash on real rows from ../shared/data: datasketch agreement on real text, real near-duplicates."""

from __future__ import annotations

import json

import numpy as np
import pytest
from datasketch import LeanMinHash, MinHash
from minhash_support import row, write_dataset
from typer.testing import CliRunner

from pipeline.store import Dataset
from pipeline.stages.minhash import MinhashConfig, run_minhash, signatures
from pipeline.stages.minhash.phases import block_text, compute_signatures

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def alpaca(shared_data):
    return json.loads((shared_data / "alpaca_helpfulness_2k.json").read_text())


def test_jaccard_estimates_agree_with_datasketch_on_real_text(alpaca):
    texts = [r["output"] for r in alpaca[:60]]
    edited = [" ".join(w if i % 9 else "changed" for i, w in enumerate(t.split())) for t in texts]
    fmt = dict(columns=["output"], unit="word", ngram=5, fold_punctuation=True, num_perm=128, seed=1, hash="datasketch")
    import pyarrow as pa
    sa = compute_signatures(block_text(pa.table({"output": texts}), fmt), fmt)[0]
    sb = compute_signatures(block_text(pa.table({"output": edited}), fmt), fmt)[0]
    for t, e, x, y in zip(texts, edited, sa, sb):
        ma, mb = MinHash(num_perm=128), MinHash(num_perm=128)
        ma.update_batch(signatures.shingles(t))
        mb.update_batch(signatures.shingles(e))
        assert LeanMinHash(seed=1, hashvalues=x).jaccard(LeanMinHash(seed=1, hashvalues=y)) == ma.jaccard(mb)


def test_real_rows_with_perturbed_copies(tmp_path, shared_data, alpaca):
    dolly = json.loads((shared_data / "dolly_3k.json").read_text())
    rng = np.random.default_rng(0)
    rows = [row(r["instruction"], r["output"], r.get("input", "")) for r in alpaca + dolly]
    copies = {}
    for k, i in enumerate(rng.choice(len(rows), 300, replace=False)):
        r = rows[i]
        w = r["output"].split()
        if len(w) < 40:
            continue
        if k % 3 == 0:  # case and whitespace only: identical after normalisation
            c = row(r["instruction"].upper() + " ", "  ".join(w), r["input"])
        elif k % 3 == 1:  # one word replaced
            w[len(w) // 2] = "REPLACED"
            c = row("copy " + r["instruction"], " ".join(w), r["input"])
        else:  # 95% kept
            c = row("copy " + r["instruction"], " ".join(w[: int(len(w) * 0.95)]), r["input"])
        copies[c["id"]] = r["id"]
        rows.append(c)
    src = write_dataset(tmp_path / "in", rows, shard_rows=1500)
    m = run_minhash(src, tmp_path / "out", MinhashConfig(shard_rows=2000), progress=False)
    rej = Dataset(tmp_path / "out").rejected().read().to_pylist()
    removed = {r["id"] for r in rej}
    # every copy or its source is gone (a copy with the same id as its source counts once)
    for cid, sid in copies.items():
        assert cid in removed or sid in removed
    assert all(r["drop_reason"] == "near_duplicate" and "near-duplicate of" in r["drop_detail"] for r in rej)
    assert m["rows_rejected"] == len(rej) and m["verified_pairs"] >= len(copies) - 5


def test_cli_on_imported_alpaca(tmp_path, shared_data):
    from pipeline.cli import app
    r = CliRunner().invoke(app, ["import", str(shared_data / "alpaca_helpfulness_2k.json"), "--out", str(tmp_path / "a"),
                                 "--workdir", str(tmp_path / "w")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["minhash", str(tmp_path / "a"), "--out", str(tmp_path / "m"), "--no-progress",
                                 "--workdir", str(tmp_path / "w")])
    assert r.exit_code == 0, r.output
    m = Dataset(tmp_path / "m").manifest()
    assert m["rows_in"] == 2022 and m["rows_out"] + m["rows_rejected"] == 2022
    assert "2022 rows in" in r.output
