"""Selection: the walk at an absolute threshold (Deita's 0.9) against a row-at-a-time reference, determinism, ties, budget, quotas, floors, resume, CLI."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.records import get_meta, new_row
from pipeline.stages.select.config import SelectConfig
from pipeline.stages.select.stage import run_select
from pipeline.stages.select.walk import SELECTED, WalkState, walk_window
from pipeline.store import Dataset, DatasetWriter


class ArraySource:
    """Vectors by input position (what NpySource does, without the file)."""

    name = "array"

    def __init__(self, vecs):
        self.vecs = vecs
        self.fetched = 0

    def fetch(self, pos):
        self.fetched += len(pos)
        return self.vecs[pos]


def unit(x):
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def clustered(n, dim=16, centres=40, spread=0.25, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, dim))
    return unit(c[rng.integers(0, centres, n)] + spread * rng.normal(size=(n, dim)))


def make_pool(tmp_path, n, *, scores=None, kinds=None, shard=97, name="in", order=None, **cols):
    rng = np.random.default_rng(1)
    scores = rng.integers(1, 30, n).astype(float) if scores is None else scores
    rows = [new_row(f"task {i}", "", f"answer {i}.", origin=["seed", "orca"][i % 2], score=scores[i],
                    task_kind=(kinds[i] if kinds is not None else None),
                    **{k: v[i] for k, v in cols.items()}) for i in range(n)]
    order = range(n) if order is None else order
    rows = [rows[i] for i in order]
    w = DatasetWriter(tmp_path / name, "score")
    for k in range(0, n, shard):
        w.write_shard(k // shard, rows[k:k + shard])
    w.write_manifest()
    return tmp_path / name, rows


def reference_walk(vecs, scores, ids, threshold, budget=None):
    """Deita, one row at a time, exact cosine: the definition the stage must match."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], ids[i]))
    chosen = []
    for i in order:
        if budget is not None and len(chosen) >= budget:
            break
        if not chosen or float((vecs[chosen] @ vecs[i]).max()) <= threshold:
            chosen.append(i)
    return chosen


def selected_ids(path):
    return set(Dataset(path).read(columns=["id"]).column("id").to_pylist())


@pytest.mark.parametrize("budget", [None, 150])
def test_matches_the_row_at_a_time_reference(tmp_path, budget):
    n = 600
    vecs = clustered(n, spread=0.3)
    path, rows = make_pool(tmp_path, n)
    m = run_select(path, tmp_path / "out", SelectConfig(threshold=0.9, budget=budget, block=64), source=ArraySource(vecs),
                   shard_rows=128, progress=False)
    ids = [r["id"] for r in rows]
    want = reference_walk(vecs, [r["score"] for r in rows], ids, 0.9, budget)
    assert selected_ids(tmp_path / "out") == {ids[i] for i in want}
    assert m["selected"] == len(want) and m["rows_out"] + m["rows_rejected"] == n
    assert 0 < m["drops"]["too_similar"] < n  # the rule did something, not everything


def test_too_similar_detail_names_the_selected_row_and_the_cosine(tmp_path):
    vecs = unit([[1, 0, 0], [0.96, 0.28, 0], [0.8, 0.6, 0], [0, 0, 1]])  # cos(0,1)=0.96, cos(0,2)=0.8
    path, rows = make_pool(tmp_path, 4, scores=np.array([9.0, 8.0, 7.0, 6.0]))
    run_select(path, tmp_path / "out", SelectConfig(threshold=0.9), source=ArraySource(vecs), progress=False)
    assert selected_ids(tmp_path / "out") == {rows[0]["id"], rows[2]["id"], rows[3]["id"]}
    rej = Dataset(tmp_path / "out").rejected().read().to_pylist()
    assert [r["drop_reason"] for r in rej] == ["too_similar"]
    assert rej[0]["drop_detail"] == f"cosine 0.9600 > 0.9 to selected row {rows[0]['id']}"
    kept = {r["id"]: get_meta(r, "select") for r in Dataset(tmp_path / "out").read().to_pylist()}
    assert kept[rows[0]["id"]] == {"rank": 0, "nn_sim": None}
    assert kept[rows[2]["id"]] == {"rank": 1, "nn_sim": 0.8}


def test_deterministic_across_input_order_and_shard_size_with_ties_by_id(tmp_path):
    n = 300
    vecs = clustered(n, spread=0.35, seed=3)
    scores = np.repeat([5.0, 3.0, 1.0], n // 3)  # many ties
    a, rows = make_pool(tmp_path, n, scores=scores, shard=50, name="a")
    perm = np.random.default_rng(7).permutation(n)
    b, rows_b = make_pool(tmp_path, n, scores=scores, shard=77, name="b", order=perm)
    run_select(a, tmp_path / "oa", SelectConfig(threshold=0.9, budget=60), source=ArraySource(vecs), progress=False)
    run_select(b, tmp_path / "ob", SelectConfig(threshold=0.9, budget=60), source=ArraySource(vecs[perm]), shard_rows=33, progress=False)
    assert selected_ids(tmp_path / "oa") == selected_ids(tmp_path / "ob")
    ranks = sorted((get_meta(r, "select")["rank"], r["score"], r["id"]) for r in Dataset(tmp_path / "oa").read().to_pylist())
    assert [(s, i) for _, s, i in ranks] == sorted([(s, i) for _, s, i in ranks], key=lambda t: (-t[0], t[1]))


def test_block_walk_equals_the_embedding_modules_greedy_walk():
    from pipeline.embeddings.neighbors import SelectedSet, greedy_diverse_select

    vecs = clustered(2000, dim=24, spread=0.3, seed=5)
    order = np.random.default_rng(2).permutation(2000)
    ref = greedy_diverse_select(vecs, order, threshold=0.9, budget=500)
    state = WalkState(SelectedSet(24), np.array([np.iinfo(np.int64).max]), 500)
    res = walk_window(vecs[order], np.zeros(2000, np.int32), state, 0.9, block=100)
    got = order[:res.examined][res.decision == SELECTED]
    assert np.array_equal(got, ref.selected)


def test_budget_stops_the_walk_and_the_rest_is_budget_reached(tmp_path):
    path, _ = make_pool(tmp_path, 200)
    src = ArraySource(unit(np.eye(200, dtype=np.float32)))  # all orthogonal: nothing too similar
    m = run_select(path, tmp_path / "out", SelectConfig(threshold=0.9, budget=25), source=src, progress=False)
    assert m["selected"] == 25 and m["budget_met"] and m["drops"] == {"budget_reached": 175}
    assert m["examined"] == 25


def test_quotas_cap_strata_with_counts_shares_and_a_default(tmp_path):
    n = 300
    kinds = np.array(["coding", "math", "open_qa"])[np.arange(n) % 3]
    path, _ = make_pool(tmp_path, n, kinds=list(kinds))
    src = ArraySource(unit(np.eye(n, dtype=np.float32)))
    cfg = SelectConfig(threshold=0.9, budget=100, quota_by="task_kind", quotas={"coding": 10, "math": 0.2, "*": 5})
    m = run_select(path, tmp_path / "out", cfg, source=src, progress=False)
    assert m["selected_per_stratum"] == {"coding": 10, "math": 20, "open_qa": 5}
    assert m["drops"]["quota_full"] == n - 35 and not m["budget_met"]
    rej = Dataset(tmp_path / "out").rejected().read().to_pylist()
    assert any(r["drop_detail"] == "task_kind 'math' quota full" for r in rej)
    with pytest.raises(Exception, match="share"):
        run_select(path, tmp_path / "o2", SelectConfig(budget="all", quota_by="task_kind", quotas={"math": 0.5}), source=src, progress=False)


def test_floors_and_unscored_rows(tmp_path):
    n = 6
    scores = np.array([9.0, np.nan, 2.0, 8.0, np.nan, 7.0])
    acc = [5.0, 4.8, 5.0, 3.0, None, 4.6]
    path, rows = make_pool(tmp_path, n, scores=[None if np.isnan(s) else s for s in scores], accuracy=acc)
    src = ArraySource(unit(np.eye(n, dtype=np.float32)))
    m = run_select(path, tmp_path / "out", SelectConfig(min_score=3.0), source=src, progress=False)
    assert m["drops"] == {"below_min_score": 1, "unscored": 2} and m["selected"] == 3
    m = run_select(path, tmp_path / "o2", SelectConfig(unscored="last"), source=src, progress=False)
    assert m["selected"] == 6
    ranks = {r["id"]: get_meta(r, "select")["rank"] for r in Dataset(tmp_path / "o2").read().to_pylist()}
    assert sorted(ranks[rows[i]["id"]] for i in (1, 4)) == [4, 5]  # unscored walk last
    m = run_select(path, tmp_path / "o3", SelectConfig(min_accuracy=4.5), source=src, progress=False)
    assert m["drops"] == {"below_min_accuracy": 1, "unscored": 2}  # 4.8 passes but has no score; None cannot pass


def test_rerun_resumes_and_other_settings_start_fresh(tmp_path):
    path, _ = make_pool(tmp_path, 120)
    vecs = clustered(120, spread=0.3)
    src = ArraySource(vecs)
    m1 = run_select(path, tmp_path / "out", SelectConfig(threshold=0.9, budget=30), source=src, progress=False)
    fetched = src.fetched
    m2 = run_select(path, tmp_path / "out", SelectConfig(threshold=0.9, budget=30), source=src, progress=False)
    assert m2["walk_resumed"] and src.fetched == fetched and m2["shards_skipped_on_resume"] == 1
    assert selected_ids(tmp_path / "out") and m2["selected"] == m1["selected"]
    m3 = run_select(path, tmp_path / "out", SelectConfig(threshold=0.9, budget=10), source=src, progress=False)
    assert not m3["walk_resumed"] and m3["selected"] == 10 and len(selected_ids(tmp_path / "out")) == 10


def test_approximate_search_past_exact_limit_agrees_with_exact(tmp_path):
    n = 3000
    vecs = clustered(n, dim=32, centres=300, spread=0.2, seed=9)
    path, _ = make_pool(tmp_path, n, shard=1000)
    run_select(path, tmp_path / "exact", SelectConfig(threshold=0.9), source=ArraySource(vecs), shard_rows=1000, progress=False)
    m = run_select(path, tmp_path / "hnsw", SelectConfig(threshold=0.9, exact_limit=200), source=ArraySource(vecs), shard_rows=1000,
                   progress=False)
    assert m["walk"]["approximate_search"]
    a, b = selected_ids(tmp_path / "exact"), selected_ids(tmp_path / "hnsw")
    assert len(a ^ b) <= 0.01 * len(a)


def test_embeddings_npy_and_cli(tmp_path):
    n = 50
    path, rows = make_pool(tmp_path, n)
    vecs = clustered(n, spread=0.2).astype(np.float16)
    np.save(tmp_path / "emb.npy", vecs)
    res = CliRunner().invoke(app, ["select", str(path), "--out", str(tmp_path / "out"), "--budget", "5",
                                   "--embeddings", str(tmp_path / "emb.npy"), "--workdir", str(tmp_path / "w"),
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "select: 5 of 50 rows selected (budget 5) -> " in res.output
    res = CliRunner().invoke(app, ["select", str(path), "--out", str(tmp_path / "o1"), "--embeddings",
                                   str(tmp_path / "emb.npy"), "--workdir", str(tmp_path / "w"),
                                   "--quota-by", "origin", "--quota", "seed=2", "--no-progress"])
    assert res.exit_code == 0, res.output
    m = Dataset(tmp_path / "o1").manifest()
    assert m["selected_per_stratum"]["seed"] == 2 and m["walk"]["embedder"] == "npy:emb.npy"
    assert "per stratum: " in res.output and m["drops"]["quota_full"] > 0
    np.save(tmp_path / "bad.npy", vecs[:10])
    res = CliRunner().invoke(app, ["select", str(path), "--out", str(tmp_path / "o2"), "--embeddings",
                                   str(tmp_path / "bad.npy"), "--workdir", str(tmp_path / "w")])
    assert res.exit_code != 0 and "one row per input row" in str(res.exception)


def test_real_embedder_rejects_paraphrases(tmp_path):
    """The bundled MiniLM through the shared embedding cache: a reworded task is too similar, a new topic is not."""
    texts = ["How do I bake sourdough bread at home?", "How can I bake sourdough bread at home?",
             "Write a poem about the winter sea.", "What causes the northern lights?"]
    rows = [new_row(t, "", f"An answer about {t}", origin="seed", score=s) for t, s in zip(texts, [9.0, 8.0, 7.0, 6.0])]
    w = DatasetWriter(tmp_path / "in", "score")
    w.write_shard(0, rows)
    w.write_manifest()
    m = run_select(tmp_path / "in", tmp_path / "out", SelectConfig(threshold=0.9), workdir=tmp_path / "w", progress=False)
    assert m["drops"] == {"too_similar": 1}
    rej = Dataset(tmp_path / "out").rejected().read().to_pylist()
    assert rej[0]["instruction"] == texts[1] and rows[0]["id"] in rej[0]["drop_detail"]
    assert m["walk"]["embedding_cache"]["misses"] == 4
    m2 = run_select(tmp_path / "in", tmp_path / "out2", SelectConfig(threshold=0.9), workdir=tmp_path / "w", progress=False)
    assert m2["walk"]["embedding_cache"] == {"hits": 4, "misses": 0}


class AgainstArray(ArraySource):
    """Published rows' vectors with their ids (what AgainstSource provides)."""

    def __init__(self, vecs, ids):
        super().__init__(vecs)
        self.ids = np.array([i.encode() for i in ids], dtype="S")
        self.rows = len(ids)


def test_against_counts_published_rows_as_selected(tmp_path):
    """With `against`, the walk is the reference walk over published + new rows with the published ones taken first."""
    vecs = clustered(300, seed=3)
    pub_path, pub_rows = make_pool(tmp_path, 100, name="published")
    path, rows = make_pool(tmp_path, 200, name="tonight", scores=np.arange(200, 0, -1).astype(float))
    pub_vecs, new_vecs = vecs[:100], vecs[100:]
    m = run_select(path, tmp_path / "out", SelectConfig(threshold=0.9, against=str(pub_path)), source=ArraySource(new_vecs),
                   against_source=AgainstArray(pub_vecs, [r["id"] for r in pub_rows]), progress=False)
    # the definition: published rows are in the set first; tonight's rows are walked best first
    chosen = list(range(100))
    for i in range(200):
        v = new_vecs[i]
        if float((vecs[chosen] @ v).max() if len(chosen) else -1) <= 0.9:
            chosen.append(100 + i)
    want = {rows[i - 100]["id"] for i in chosen if i >= 100}
    assert selected_ids(tmp_path / "out") == want
    assert m["walk"]["against"] == {"dataset": str(pub_path), "rows": 100, "vectors": "given"}
    rej = Dataset(tmp_path / "out").rejected().read().to_pylist()
    pub_ids = {r["id"] for r in pub_rows}
    to_published = [r for r in rej if "published row" in r["drop_detail"]]
    assert to_published and all(r["drop_reason"] == "too_similar" for r in to_published)
    for r in to_published:
        named = r["drop_detail"].split("published row ")[1].split(" ")[0]
        assert named in pub_ids
        v = new_vecs[[x["id"] for x in rows].index(r["id"])]
        assert float(pub_vecs[[x["id"] for x in pub_rows].index(named)] @ v) > 0.9
    # without `against`, those rows would have been taken
    alone = run_select(path, tmp_path / "alone", SelectConfig(threshold=0.9), source=ArraySource(new_vecs), progress=False)
    assert alone["selected"] > m["selected"]


def test_against_rejects_precomputed_embeddings_and_resumes(tmp_path):
    from pydantic import ValidationError
    with pytest.raises(ValidationError, match="against"):
        SelectConfig(against="x", embeddings="y.npy")
    vecs = clustered(120, seed=4)
    pub_path, pub_rows = make_pool(tmp_path, 40, name="published")
    path, _ = make_pool(tmp_path, 80, name="tonight")
    cfg = SelectConfig(threshold=0.9, against=str(pub_path))
    src = AgainstArray(vecs[:40], [r["id"] for r in pub_rows])
    m1 = run_select(path, tmp_path / "out", cfg, source=ArraySource(vecs[40:]), against_source=src, progress=False)
    rej1 = Dataset(tmp_path / "out").rejected().read(columns=["id", "drop_detail"]).to_pylist()
    for f in (tmp_path / "out").glob("part-*.parquet"):  # a kill during the write phase
        f.unlink()
    for f in (tmp_path / "out").glob("_done/*"):
        f.unlink()
    (tmp_path / "out" / "_manifest.json").unlink()
    m2 = run_select(path, tmp_path / "out", cfg, source=ArraySource(vecs[40:]), against_source=src, progress=False)
    assert m2["walk_resumed"] and m2["selected"] == m1["selected"]
    assert Dataset(tmp_path / "out").rejected().read(columns=["id", "drop_detail"]).to_pylist() == rej1


def test_real_embedder_against_a_published_dataset_text_and_stored_vectors(tmp_path):
    """MiniLM for real: a paraphrase of a published row is dropped naming it, from embedded text and from the
    embeddings semdedup stored with the published rows (which are then used as stored)."""
    from pipeline.stages.semdedup import run_semdedup
    from pipeline.stages.semdedup.config import SemdedupConfig

    published = [new_row(t, "", f"An answer about {t}", origin="seed", score=5.0)
                 for t in ["How do I bake sourdough bread at home?", "Explain how vaccines train the immune system."]]
    w = DatasetWriter(tmp_path / "pub", "score")
    w.write_shard(0, published)
    w.write_manifest()
    tonight = [new_row(t, "", f"An answer about {t}", origin="seed", score=s) for t, s in
               [("How can I bake sourdough bread at home?", 9.0), ("What causes the northern lights?", 8.0)]]
    w = DatasetWriter(tmp_path / "in", "score")
    w.write_shard(0, tonight)
    w.write_manifest()
    run_semdedup(tmp_path / "pub", tmp_path / "pub_dedup", SemdedupConfig(), workdir=tmp_path / "w", progress=False)
    for name, against, vectors in (("text", tmp_path / "pub", "embedded"), ("stored", tmp_path / "pub_dedup", "stored")):
        m = run_select(tmp_path / "in", tmp_path / name, SelectConfig(threshold=0.9, text="fields", against=str(against)),
                       workdir=tmp_path / f"w-{name}", progress=False)
        assert m["walk"]["against"]["vectors"] == vectors and m["drops"] == {"too_similar": 1}
        rej = Dataset(tmp_path / name).rejected().read().to_pylist()
        assert rej[0]["id"] == tonight[0]["id"] and f"published row {published[0]['id']}" in rej[0]["drop_detail"]
        assert selected_ids(tmp_path / name) == {tonight[1]["id"]}
    res = CliRunner().invoke(app, ["select", str(tmp_path / "in"), "--against", str(tmp_path / "pub"),
                                   "--out", str(tmp_path / "cli"), "--workdir", str(tmp_path / "w"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "2 published rows counted as selected (embedded vectors)" in res.output
