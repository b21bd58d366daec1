"""MinHash stage: datasketch compatibility, exact shingles, banding, verification, keep policy,
determinism, resume after a kill, incremental --against, edge cases, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasketch import LeanMinHash, MinHash, MinHashLSH
from minhash_support import outcome, row, synthetic_rows, words, write_dataset

from pipeline import records
from pipeline.store import Dataset, DatasetError
from pipeline.stages.minhash import MinhashConfig, run_minhash, signatures, stage
from pipeline.stages.minhash.candidates import candidate_probability, choose_banding
from pipeline.stages.minhash.phases import block_text, compute_signatures

TRICKY = [
    "Write a haiku about autumn leaves falling on a quiet pond, please.",
    "ＦＵＬＬＷＩＤＴＨ letters, ﬁligree ligatures — and “curly quotes”… e\u0301cole Straße",
    "x+y = z; a-b=c  $100 <tag> C++ vs. C#",
    "short",
    "   \t\n  ",
    "!!! ... ???",
    "",
    "天气很好，我们去公园散步吧。今天的天气非常好。",
    "emoji 🙂 text 🙂 with \u200b zero width and tabs\tand\r\nnewlines",
    "İstanbul ΣΊΣΥΦΟΣ naïve café",
    "ȺȾ grow when lowercased: Ⱥ is 2 bytes, ⱥ is 3",
]


def _sigs(texts, **fmt):
    f = dict(columns=["instruction"], unit="word", ngram=5, fold_punctuation=True, num_perm=128, seed=1, hash="fast")
    f.update(fmt)
    arr = block_text(pa.table({"instruction": pa.array(texts, pa.string())}), f)
    return compute_signatures(arr, f, want_sets=True)


def test_permutations_are_datasketchs():
    for num_perm, seed in ((128, 1), (64, 7)):
        a, b = signatures.permutations(num_perm, seed)
        pa_, pb_ = MinHash(num_perm=num_perm, seed=seed).permutations
        assert np.array_equal(a, pa_) and np.array_equal(b, pb_)


@pytest.mark.parametrize("unit", ["word", "char"])
def test_datasketch_mode_is_bit_identical_to_datasketch(unit):
    sigs, nsh, _ = _sigs(TRICKY, hash="datasketch", unit=unit)
    for t, sig, n in zip(TRICKY, sigs, nsh):
        sh = signatures.shingles(t, unit=unit)
        m = MinHash(num_perm=128, seed=1)  # datasketch's defaults: sha1_hash32
        m.update_batch(sh)
        assert n == len(sh)
        assert np.array_equal(m.hashvalues, sig.astype(np.uint64)), t
        lean = LeanMinHash(seed=1, hashvalues=sig)
        assert lean == LeanMinHash(m)


def test_fast_mode_reproduced_by_datasketch_with_our_hashfunc():
    sigs, _, _ = _sigs(TRICKY, hash="fast")
    for t, sig in zip(TRICKY, sigs):
        m = MinHash(num_perm=128, seed=1, hashfunc=signatures.hashfunc("fast", "word"))
        m.update_batch(signatures.shingles(t))
        assert np.array_equal(m.hashvalues, sig.astype(np.uint64)), t


@pytest.mark.parametrize("fmt", [dict(), dict(unit="char", ngram=3), dict(fold_punctuation=False),
                                 dict(ngram=1, num_perm=64, seed=7), dict(hash="datasketch", ngram=2)])
def test_kernel_shingles_equal_the_reference(fmt):
    sigs, nsh, (indptr, raw) = _sigs(TRICKY, **fmt)
    unit = fmt.get("unit", "word")
    h = signatures.hashfunc(fmt.get("hash", "fast"), unit)
    for i, t in enumerate(TRICKY):
        sh = signatures.shingles(t, unit=unit, ngram=fmt.get("ngram", 5), fold_punctuation=fmt.get("fold_punctuation", True))
        assert [h(s) for s in sh] == raw[indptr[i]:indptr[i + 1]].tolist(), t
        ref = signatures.signature(sh, fmt.get("num_perm", 128), fmt.get("seed", 1), fmt.get("hash", "fast"), unit)
        assert np.array_equal(ref, sigs[i])


@pytest.mark.parametrize("fmt", [dict(), dict(unit="char", ngram=3), dict(fold_punctuation=False),
                                 dict(hash="datasketch", ngram=2)])
def test_column_kernel_equals_joined_text(fmt):
    """The signature phase reads the columns' buffers (no joined copy): same signatures and hashes as block_text."""
    from pipeline.stages.minhash.phases import table_signatures
    f = dict(columns=["instruction", "input", "output"], unit="word", ngram=5, fold_punctuation=True, num_perm=128,
             seed=1, hash="fast")
    f.update(fmt)
    rng = np.random.default_rng(4)
    cols = {c: [TRICKY[i] if i < len(TRICKY) else None for i in rng.integers(0, len(TRICKY) + 3, 60)]
            for c in f["columns"]}
    t = pa.table({c: pa.array(v, pa.string()) for c, v in cols.items()}).slice(5)  # sliced: offsets not at 0
    sigs, nsh, (indptr, raw) = table_signatures(t, f, want_sets=True)
    want_sigs, want_nsh, (want_ptr, want_raw) = compute_signatures(block_text(t, f), f, want_sets=True)
    assert np.array_equal(sigs, want_sigs) and np.array_equal(nsh, want_nsh)
    assert np.array_equal(indptr, want_ptr) and np.array_equal(raw, want_raw)


def test_rejected_columns_equal_per_row_formatting():
    """The filter phase builds reasons, details and meta column-wise: same text as formatting each row."""
    from pipeline.stages.minhash.rejects import rejected_columns
    rng = np.random.default_rng(2)
    n = 300
    ids = [f"r{i}" for i in range(n)]
    ids[3], ids[7], ids[9] = 'quo"te', "ctl\x02", "ünï"  # JSON must escape the first two
    d = {"local": list(range(n)), "leader_id": ids, "est": (rng.integers(0, 129, n) / 128).tolist(),
         "ver": (rng.integers(0, 500, n) / rng.integers(500, 700, n)).tolist(),
         "leader_ref": (rng.random(n) < 0.2).tolist()}
    d["leader_src"] = [f"/pub/part-{i}" if d["leader_ref"][i] else None for i in range(n)]
    meta = [None] * n
    meta[5], meta[6] = '{"zeta": 1, "a": [2]}', ""
    reasons, details, metas = rejected_columns(pa.array(meta, pa.string()), d, "exact")
    for i in range(n):
        ref, dup, est, ver = d["leader_ref"][i], ids[i], d["est"][i], d["ver"][i]
        assert reasons[i].as_py() == ("near_duplicate_existing" if ref else "near_duplicate")
        where = f" in {d['leader_src'][i]}" if ref else ""
        assert details[i].as_py() == f"near-duplicate of {dup}{where} (Jaccard exact {ver:.3f}, estimated {est:.3f})"
        want = json.loads(meta[i]) if meta[i] else {}
        want["minhash"] = {"duplicate_of": dup, "estimated": round(est, 4), "verified": round(ver, 4),
                           "verify": "exact", "against": bool(ref)}
        assert metas[i].as_py() == json.dumps(want, ensure_ascii=False, sort_keys=True)


def test_cached_code_point_tables_equal_fresh_ones():
    assert np.array_equal(signatures.separator_table(), signatures._build_separator_table())
    assert np.array_equal(signatures.lowercase_table(), signatures._build_lowercase_table())


def test_normalisation_rules():
    assert signatures.normalize("ＡＢＣ  Def") == "abc  def"
    assert signatures.tokens(signatures.normalize("Hello,   WORLD!! x+y")) == ["hello", "world", "x+y"]
    assert signatures.tokens("a.b", fold_punctuation=False) == ["a.b"]
    assert signatures.shingles("one two three", ngram=5) == [b"one two three"]
    assert signatures.shingles("  ...  ") == []
    assert signatures.shingles("ab c", unit="char", ngram=3) == [b"ab ", b"b c"]


def test_banding_reaches_the_recall_target_and_reports_the_curve():
    for t in (0.5, 0.7, 0.8, 0.9):
        for target in (0.9, 0.95, 0.99):
            b = choose_banding(t, 128, target)
            assert b.bands * b.rows <= 128
            assert candidate_probability(t, b.bands, b.rows) >= target
    b = choose_banding(0.7, 128, 0.95)
    curve = b.to_dict()["s_curve"]
    assert list(curve) == ["0.5", "0.6", "0.7", "0.8", "0.9"]
    assert curve["0.7"] >= 0.95 and curve["0.5"] < curve["0.9"]
    # datasketch's own optimiser at the same threshold misses far more pairs at the threshold
    lsh = MinHashLSH(threshold=0.9, num_perm=128)
    assert candidate_probability(0.9, lsh.b, lsh.r) < 0.5
    with pytest.raises(ValueError):
        choose_banding(0.1, 8, 0.99)  # 8 permutations cannot catch 0.1-similar pairs 99% of the time


def _crafted(tmp_path):
    """Groups of (base, variant) rows with exact, known shingle Jaccard: variant = first k words."""
    rng = np.random.default_rng(3)
    rows, expect = [], {}
    for j, target in enumerate([0.95, 0.85, 0.75, 0.65, 0.55, 0.3]):
        base = words(rng, 104, vocab=10**9)  # 100 distinct 5-gram shingles
        k = int(round(target * 100)) + 4
        a = row(f"group {j}", " ".join(base))
        b = row(f"group {j} variant", " ".join(base[:k]))
        # the instruction adds shingles: compute the exact value from the reference shingles
        sa = set(signatures.shingles(a["instruction"] + "\n\n" + a["output"]))
        sb = set(signatures.shingles(b["instruction"] + "\n\n" + b["output"]))
        expect[b["id"]] = (a["id"], len(sa & sb) / len(sa | sb))
        rows += [a, b]
    return write_dataset(tmp_path / "in", rows), expect


def test_crafted_near_duplicates_at_known_jaccard(tmp_path):
    src, expect = _crafted(tmp_path)
    m = run_minhash(src, tmp_path / "out", MinhashConfig(threshold=0.7), progress=False)
    res, table = outcome(tmp_path / "out")
    for vid, (aid, j) in expect.items():
        if j >= 0.7:
            assert res[vid] == aid, (j, res[vid])
        else:
            assert res[vid] is None, j
    rej = Dataset(tmp_path / "out").rejected().read().to_pylist()
    assert {r["drop_reason"] for r in rej} == {"near_duplicate"}
    for r in rej:
        meta = records.get_meta(r, "minhash")
        assert meta["verified"] == pytest.approx(expect[r["id"]][1], abs=1e-4)
        assert expect[r["id"]][0] in r["drop_detail"] and r["minhash_cluster"] == expect[r["id"]][0]
    assert m["rows_rejected"] == sum(j >= 0.7 for _, j in expect.values())
    assert m["banding"]["recall_at_threshold"] >= 0.95 and "s_curve" in m["banding"]
    kept = Dataset(tmp_path / "out").read(["id", "minhash_cluster"]).to_pylist()
    assert all(r["minhash_cluster"] == r["id"] for r in kept)
    removed = {k: v for k, v in res.items() if v is not None}
    in_table = {r["id"]: r for r in table}
    for vid, aid in removed.items():  # the cluster table holds both sides, with the kept one marked
        assert in_table[vid]["duplicate_of"] == aid and not in_table[vid]["kept"] and in_table[aid]["kept"]


def test_estimate_verification_and_component_mode(tmp_path):
    src, expect = _crafted(tmp_path)
    run_minhash(src, tmp_path / "est", MinhashConfig(verify="estimate", cluster="component"), progress=False)
    res, _ = outcome(tmp_path / "est")
    for vid, (aid, j) in expect.items():
        if j >= 0.8 or j < 0.6:  # far from the threshold the estimate decides the same way
            assert (res[vid] == aid) == (j >= 0.7)


def test_keep_policy_score_then_length_then_id(tmp_path):
    rng = np.random.default_rng(5)
    base = words(rng, 80)
    longer = " ".join(base + ["extra"])
    rows = [row("keep policy", " ".join(base), score=1.0), row("keep policy", longer, score=None),
            row("keep policy", " ".join(base[:-1]), score=4.0)]
    # same id for all three (same instruction); ids differ in the second group
    src = write_dataset(tmp_path / "in", rows)
    run_minhash(src, tmp_path / "a", MinhashConfig(), progress=False)
    kept = Dataset(tmp_path / "a").read(["output", "score"]).to_pylist()
    assert kept == [{"output": " ".join(base[:-1]), "score": 4.0}]
    run_minhash(src, tmp_path / "b", MinhashConfig(keep_by=["length", "id"]), progress=False)
    assert Dataset(tmp_path / "b").read(["output"]).to_pylist() == [{"output": longer}]
    ids = [row(f"instr {c}", " ".join(base)) for c in "cab"]
    run_minhash(write_dataset(tmp_path / "in2", ids), tmp_path / "c", MinhashConfig(), progress=False)
    assert Dataset(tmp_path / "c").read(["id"]).column(0).to_pylist() == [min(r["id"] for r in ids)]


def test_removals_are_independent_of_worker_count_and_shard_order(tmp_path, monkeypatch):
    monkeypatch.setattr(stage, "INLINE_BELOW_ROWS", 0)  # real worker processes even for small data
    rows = synthetic_rows(400, 250, seed=11)
    a = write_dataset(tmp_path / "a", rows, shard_rows=300)
    shuffled = [rows[i] for i in np.random.default_rng(1).permutation(len(rows))]
    b = write_dataset(tmp_path / "b", shuffled, shard_rows=170)
    ma = run_minhash(a, tmp_path / "oa", MinhashConfig(workers=1, shard_rows=200), progress=False)
    mb = run_minhash(b, tmp_path / "ob", MinhashConfig(workers=2, shard_rows=130), progress=False)
    ra, ta = outcome(tmp_path / "oa")
    rb, tb = outcome(tmp_path / "ob")
    assert ma["rows_rejected"] > 150 and mb["rows_rejected"] == ma["rows_rejected"]
    assert ra == rb and ta == tb


_KILL = """
import os, sys
from pipeline.stages.minhash import MinhashConfig, run_minhash, stage
stage.INLINE_BELOW_ROWS = 0  # worker processes, as on a large dataset
def hook(phase):
    if phase == sys.argv[3]:
        os._exit(9)  # a hard kill: no cleanup, no manifest
if __name__ == "__main__":
    run_minhash(sys.argv[1], sys.argv[2], MinhashConfig(workers=2, shard_rows=150), progress=False, on_phase=hook)
"""


@pytest.mark.parametrize("phase", ["signatures", "candidates", "verify", "clusters"])
def test_resume_after_a_kill_between_phases(tmp_path, phase):
    src = write_dataset(tmp_path / "in", synthetic_rows(300, 200, seed=2))
    script = tmp_path / "kill.py"
    script.write_text(_KILL)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    r = subprocess.run([sys.executable, str(script), str(src), str(tmp_path / "out"), phase], env=env)
    assert r.returncode == 9
    assert not (tmp_path / "out" / "_manifest.json").exists()
    m = run_minhash(src, tmp_path / "out", MinhashConfig(workers=2, shard_rows=150), progress=False)
    done = ["signatures", "candidates", "verify", "clusters"]
    assert m["phases_skipped_on_resume"] == done[:done.index(phase) + 1]
    run_minhash(src, tmp_path / "fresh", MinhashConfig(workers=1, shard_rows=150), progress=False)
    assert outcome(tmp_path / "out") == outcome(tmp_path / "fresh")
    assert not (tmp_path / "out" / "_work").exists()
    again = run_minhash(src, tmp_path / "out", MinhashConfig(workers=2, shard_rows=150), progress=False)
    assert again == json.loads((tmp_path / "out" / "_manifest.json").read_text())


def test_resume_refuses_other_settings(tmp_path):
    src = write_dataset(tmp_path / "in", synthetic_rows(20, 5))
    run_minhash(src, tmp_path / "out", MinhashConfig(), progress=False)
    with pytest.raises(DatasetError, match="different settings"):
        run_minhash(src, tmp_path / "out", MinhashConfig(threshold=0.8), progress=False)


def test_empty_and_one_row_datasets(tmp_path):
    empty = write_dataset(tmp_path / "empty", [])
    m = run_minhash(empty, tmp_path / "o0", MinhashConfig(), progress=False)
    assert (m["rows_in"], m["rows_out"], m["candidate_pairs"]) == (0, 0, 0)
    one = write_dataset(tmp_path / "one", [row("only row", "a single answer")])
    m = run_minhash(one, tmp_path / "o1", MinhashConfig(), progress=False)
    assert (m["rows_in"], m["rows_out"], m["rows_rejected"]) == (1, 1, 0)
    out = Dataset(tmp_path / "o1").read(["id", "minhash_cluster"]).to_pylist()
    assert out[0]["minhash_cluster"] == out[0]["id"]


def test_empty_and_huge_texts(tmp_path):
    rng = np.random.default_rng(9)
    huge = " ".join(words(rng, 300_000))
    rows = [row("", ""), row(" ", "  "), row("...", "!!"), row("huge", huge), row("huge copy", huge + " tail"),
            row("normal", " ".join(words(rng, 50)))]
    m = run_minhash(write_dataset(tmp_path / "in", rows), tmp_path / "out", MinhashConfig(), progress=False)
    res, _ = outcome(tmp_path / "out")
    assert m["empty_text_rows"] == 3  # never candidates: nothing to compare
    assert sum(v is not None for v in res.values()) == 1
    assert res[rows[4]["id"]] == rows[3]["id"] or res[rows[3]["id"]] == rows[4]["id"]


def test_against_uses_stored_signatures_and_can_register_new_ones(tmp_path):
    old = synthetic_rows(150, 0, seed=4)
    run_minhash(write_dataset(tmp_path / "old", old), tmp_path / "pub", MinhashConfig(), progress=False)
    assert json.loads((tmp_path / "pub" / "_minhash" / "store.json").read_text())["segments"]
    rng = np.random.default_rng(8)
    new = [row(f"new copy {i}", old[i]["output"] + " tail") for i in range(10)]
    new += [row(f"fresh {i}", " ".join(words(rng, 60))) for i in range(10)]
    src = write_dataset(tmp_path / "new", new)
    m = run_minhash(src, tmp_path / "inc", MinhashConfig(against=[str(tmp_path / "pub")], add_to_against=True),
                    progress=False)
    assert m["against_rows"] == 150 and m["drops"] == {"near_duplicate_existing": 10}
    res, _ = outcome(tmp_path / "inc")
    assert all(res[new[i]["id"]] == old[i]["id"] for i in range(10))
    rej = Dataset(tmp_path / "inc").rejected().read().to_pylist()
    assert all(str(tmp_path / "pub") in r["drop_detail"] for r in rej)
    # the published dataset now also knows the new kept rows: a rerun of them is all duplicates
    again = write_dataset(tmp_path / "again", [row(f"again {i}", new[10 + i]["output"]) for i in range(10)])
    m2 = run_minhash(again, tmp_path / "inc2", MinhashConfig(against=[str(tmp_path / "pub")]), progress=False)
    assert m2["against_rows"] == 160 and m2["rows_rejected"] == 10
    with pytest.raises(DatasetError, match="not comparable"):
        run_minhash(src, tmp_path / "bad", MinhashConfig(against=[str(tmp_path / "pub")], ngram=3), progress=False)
    with pytest.raises(DatasetError, match="no stored MinHash"):
        run_minhash(src, tmp_path / "bad2", MinhashConfig(against=[str(tmp_path / "old")]), progress=False)


def test_stored_signatures_load_as_lean_minhash(tmp_path):
    rows = synthetic_rows(30, 0, seed=6)
    run_minhash(write_dataset(tmp_path / "in", rows), tmp_path / "out", MinhashConfig(hash="datasketch"),
                progress=False)
    sig = np.load(tmp_path / "out" / "_minhash" / "part-00000.sig.npy")
    kept = pq.read_table(tmp_path / "out" / "part-00000.parquet").to_pylist()
    for r, s in list(zip(kept, sig))[:5]:
        m = MinHash(num_perm=128, seed=1)
        m.update_batch(signatures.shingles("\n".join([r["instruction"], r["input"], r["output"]])))
        assert LeanMinHash(seed=1, hashvalues=s) == LeanMinHash(m)


def test_config_errors():
    with pytest.raises(ValueError, match="both bands"):
        MinhashConfig(bands=4)
    with pytest.raises(ValueError, match="exceeds num_perm"):
        MinhashConfig(bands=20, rows_per_band=10)
    with pytest.raises(ValueError):
        MinhashConfig(keep_by=["id", "id"])


def test_bad_columns_are_config_errors(tmp_path):
    from pipeline.config import ConfigError
    src = write_dataset(tmp_path / "in", synthetic_rows(5, 0))
    with pytest.raises(ConfigError, match="not record columns"):
        run_minhash(src, tmp_path / "o", MinhashConfig(columns=["nope"]), progress=False)
    with pytest.raises(ConfigError, match="not a numeric record column"):
        run_minhash(src, tmp_path / "o2", MinhashConfig(score_column="id"), progress=False)


def test_cli_and_plan(tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app
    from pipeline.plan import default_plan
    src = write_dataset(tmp_path / "in", synthetic_rows(50, 20, seed=1))
    r = CliRunner().invoke(app, ["minhash", str(src), "--out", str(tmp_path / "out"), "--workdir", str(tmp_path / "w"),
                                 "--threshold", "0.75", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "near-duplicates removed" in r.output and "bands x" in r.output
    m = Dataset(tmp_path / "out").manifest()
    assert m["settings"]["threshold"] == 0.75 and m["rows_rejected"] > 0
    bad = CliRunner().invoke(app, ["minhash", str(src), "--out", str(tmp_path / "o2"), "--hash", "md5"])
    assert bad.exit_code != 0
    assert CliRunner().invoke(app, ["minhash", "--help"]).exit_code == 0
    names = [s.name for s in default_plan()]
    assert names.index("minhash") == names.index("orca") + 1
