"""semdedup: real MiniLM on written paraphrases, the fast path, the cache, search, keep policy, resume, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pipeline import records
from pipeline.stages.semdedup import run_semdedup
from pipeline.stages.semdedup.config import SemdedupConfig
from pipeline.store import Dataset, DatasetWriter

ROOT = Path(__file__).resolve().parent.parent

# Same meaning, different words (written for these tests).
PARAPHRASES = [
    ("What is the capital city of France?", "What's the capital of France?"),
    ("Give me three tips for staying healthy.", "Provide three tips for staying healthy."),
    ("Write a short poem about the ocean.", "Compose a short poem about the ocean."),
    ("Explain how photosynthesis works.", "Describe how photosynthesis works."),
    ("How many legs does a spider have?", "How many legs do spiders have?"),
    ("Translate 'good morning' into Spanish.", "Translate the phrase 'good morning' to Spanish."),
    ("What are the main causes of climate change?", "What are the primary causes of climate change?"),
    ("Summarize the plot of Romeo and Juliet in two sentences.", "In two sentences, summarize the plot of Romeo and Juliet."),
    ("Who wrote the novel Pride and Prejudice?", "Who is the author of the novel Pride and Prejudice?"),
]
# Different tasks, some on neighbouring topics or with the same frame.
UNRELATED = [
    "Give me three tips for saving money.",
    "Explain how a bill becomes a law.",
    "List five countries in South America.",
    "Who painted the Mona Lisa?",
    "Explain how a car engine works.",
    "What is the boiling point of water at sea level?",
    "Write a haiku about autumn leaves.",
    "Describe the rules of chess in one paragraph.",
    "How do vaccines train the immune system?",
    "Suggest a name for a bakery that sells only bread.",
]


def make_dataset(path: Path, rows: list[dict], shard_rows: int = 7) -> Path:
    w = DatasetWriter(path, "import")
    for k in range(0, max(len(rows), 1), shard_rows):
        w.write_shard(k // shard_rows, rows[k:k + shard_rows])
    w.write_manifest()
    return path


def row(instruction: str, output: str = "An answer.", score: float | None = None, input: str = "") -> dict:
    return records.new_row(instruction, input, output, origin="import", score=score)


def paraphrase_rows() -> list[dict]:
    rows = []
    for a, b in PARAPHRASES:
        rows += [row(a, "A short answer."), row(b, "A somewhat longer answer.")]
    return rows + [row(u) for u in UNRELATED]


def dropped(out: Path) -> dict[str, dict]:
    rej = Dataset(out).rejected()
    return {} if rej is None else {r["id"]: r for r in rej.read().to_pylist()}


@pytest.fixture(scope="module")
def full():
    from pipeline.embeddings.embedder import load_embedder
    return load_embedder("minilm", device="cpu")


@pytest.fixture(scope="module")
def fast():
    from pipeline.embeddings.embedder import load_embedder
    return load_embedder("minilm", fast=True)


def test_embedder_rows_are_unit_float32_and_named(full, fast):
    for e in (full, fast):
        v = e.encode(["one text", "another text", ""])
        assert v.dtype == np.float32 and v.shape == (3, e.dim)
        assert np.allclose(np.linalg.norm(v[:2], axis=1), 1.0, atol=1e-5)
    assert full.name != fast.name and "MiniLM" in full.name


def test_full_minilm_finds_written_paraphrases_and_not_unrelated(tmp_path, full):
    inp = make_dataset(tmp_path / "in", paraphrase_rows())
    m = run_semdedup(inp, tmp_path / "out", SemdedupConfig(), workdir=tmp_path, embedder=full, progress=False)
    drops = dropped(tmp_path / "out")
    ids = {r["instruction"]: r["id"] for r in paraphrase_rows()}
    for a, b in PARAPHRASES:
        # Exactly one of each pair goes, and it names the other one; the longer answer stays.
        assert ids[a] in drops and ids[b] not in drops, (a, b)
        d = drops[ids[a]]
        assert d["drop_reason"] == "semantic_duplicate" and d["semdedup_cluster"] == ids[b]
        meta = records.get_meta(d, "semdedup")
        assert meta["dup_of"] == ids[b] and meta["cosine"] >= 0.95 and ids[b] in d["drop_detail"]
        assert f'"{b}"' in d["drop_detail"]  # the kept row's words, for `distill inspect`
    assert not any(ids[u] in drops for u in UNRELATED)
    assert m["rows_out"] == len(UNRELATED) + len(PARAPHRASES) and m["embedder"] == full.name
    kept = Dataset(tmp_path / "out").read().to_pylist()
    assert all(r["semdedup_cluster"] for r in kept)


def test_fast_path_with_verify_agrees_and_fast_alone_never_drops_unrelated(tmp_path, full, fast):
    inp = make_dataset(tmp_path / "in", paraphrase_rows())
    run_semdedup(inp, tmp_path / "full", SemdedupConfig(), workdir=tmp_path, embedder=full, progress=False)
    run_semdedup(inp, tmp_path / "fv", SemdedupConfig(fast=True, verify=True), workdir=tmp_path,
                 embedder=fast, full_embedder=full, progress=False)
    run_semdedup(inp, tmp_path / "fast", SemdedupConfig(fast=True), workdir=tmp_path, embedder=fast, progress=False)
    by_full, by_verify, by_fast = (dropped(tmp_path / n) for n in ("full", "fv", "fast"))
    assert set(by_verify) == set(by_full)
    assert {k: v["semdedup_cluster"] for k, v in by_verify.items()} == {k: v["semdedup_cluster"] for k, v in by_full.items()}
    # Alone, the static model keeps precision (nothing outside the full model's pairs)
    # and catches the rewordings that share most words; bench_semdedup.py measures its recall.
    assert set(by_fast) <= set(by_full) and len(by_fast) >= len(by_full) // 2


def test_cache_hits_on_rerun_embed_only_new_rows(tmp_path, fast):
    rows = paraphrase_rows()
    make_dataset(tmp_path / "a", rows)
    cfg = SemdedupConfig(fast=True, cache_dir=str(tmp_path / "cache"))
    calls0 = fast.calls
    m1 = run_semdedup(tmp_path / "a", tmp_path / "o1", cfg, embedder=fast, progress=False)
    assert m1["embed"]["encoded"] == len(rows) and fast.calls > calls0
    calls1, rows1 = fast.calls, fast.rows_encoded
    m2 = run_semdedup(tmp_path / "a", tmp_path / "o2", cfg, embedder=fast, progress=False)
    assert fast.calls == calls1 and m2["embed"]["cache_hits"] == len(rows) and m2["embed"]["encoded"] == 0
    new = [row("Name the largest planet in the solar system."), row("Give an example of a mammal that lays eggs.")]
    make_dataset(tmp_path / "b", rows + new)
    m3 = run_semdedup(tmp_path / "b", tmp_path / "o3", cfg, embedder=fast, progress=False)
    assert fast.rows_encoded - rows1 == len(new) and m3["embed"]["encoded"] == len(new)
    assert dropped(tmp_path / "o3").keys() == dropped(tmp_path / "o1").keys()


def test_keep_policy_and_independence_from_input_order(tmp_path, fast):
    a = "Explain how photosynthesis works."
    rows = [row(a, "short", score=2.0), row("Describe how photosynthesis works.", "a much longer answer here", score=None),
            row("Explain how photosynthesis works!", "mid answer", score=5.0)] + [row(u) for u in UNRELATED]
    rows += [row("Who wrote the novel Pride and Prejudice?", "x" * 50), row("Who is the author of the novel Pride and Prejudice?", "y" * 50)]
    cfg = SemdedupConfig(fast=True, verify=False, fast_threshold=0.85)
    results = []
    for i, order in enumerate([rows, rows[::-1], rows[3:] + rows[:3]]):
        make_dataset(tmp_path / f"in{i}", order, shard_rows=3 + i)
        run_semdedup(tmp_path / f"in{i}", tmp_path / f"out{i}", cfg, workdir=tmp_path, shard_rows=4 + i,
                     embedder=fast, progress=False)
        results.append({k: (v["semdedup_cluster"], v["drop_detail"]) for k, v in dropped(tmp_path / f"out{i}").items()})
    assert results[0] == results[1] == results[2]
    best = records.make_id("Explain how photosynthesis works!")
    assert best not in results[0] and results[0][records.make_id(a)][0] == best  # highest score wins
    tie = [records.make_id("Who wrote the novel Pride and Prejudice?"), records.make_id("Who is the author of the novel Pride and Prejudice?")]
    assert sum(t in results[0] for t in tie) == 1 and min(tie) not in results[0]  # equal score and length: smallest id


def test_exact_ivf_kmeans_pairs_on_planted_duplicates():
    from pipeline.stages.semdedup.search import (
        Pairs,
        exact_pairs,
        find_pairs,
        ivf_pairs,
        kmeans_pairs,
        pair_recall,
        sampled_recall,
    )
    rng = np.random.default_rng(0)
    base = rng.normal(size=(3000, 32)).astype(np.float32)
    near = base[:300] + rng.normal(scale=0.05, size=(300, 32)).astype(np.float32)
    x = np.concatenate([base, near])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    truth = {(int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(x @ x.T >= 0.95, 1)))}
    ex = exact_pairs(x, 0.95, block=512)
    assert ex.as_set() == truth and len(truth) >= 300
    assert np.all(ex.sim >= 0.95) and np.all(ex.i < ex.j)
    assert pair_recall(ivf_pairs(x, 0.95, nprobe=8), ex) >= 0.99
    assert pair_recall(kmeans_pairs(x, 0.95, k=20), ex) >= 0.9
    assert find_pairs(x, 0.95, "auto", exact_max_rows=10)[1] == "ivf"
    assert sampled_recall(x, ex, 0.95, sample=3300)["recall"] == 1.0
    half = Pairs(ex.i[::2], ex.j[::2], ex.sim[::2])
    est = sampled_recall(x, half, 0.95, sample=1000)
    assert est["sample_pairs"] > 50 and 0.3 < est["recall"] < 0.7


def test_components_are_the_connected_components_whatever_the_pair_order():
    from pipeline.dedup import components
    rng = np.random.default_rng(3)
    n = 3000
    i, j = rng.integers(0, n, 2500), rng.integers(0, n, 2500)
    i, j = np.minimum(i, j)[i != j], np.maximum(i, j)[i != j]
    adj: dict[int, list[int]] = {}
    for a, b in zip(i.tolist(), j.tolist()):
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, []).append(a)
    want = np.arange(n)
    for start in range(n):  # the definition: flood fill from each smallest unvisited row
        if want[start] != start or start not in adj:
            continue
        stack, seen = [start], {start}
        while stack:
            for b in adj[stack.pop()]:
                if b not in seen:
                    seen.add(b)
                    stack.append(b)
        want[list(seen)] = start
    for perm in (np.arange(len(i)), rng.permutation(len(i)), np.arange(len(i))[::-1]):
        assert np.array_equal(components(n, i[perm], j[perm]), want)
    chain = np.arange(n - 1)[::-1].copy()  # a long path, given from its far end
    assert (components(n, chain, chain + 1) == 0).all()


def test_greedy_diverse_select_equals_one_row_at_a_time():
    from pipeline.embeddings.neighbors import SelectedSet, greedy_diverse_select, max_similarity_to_set
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 16)).astype(np.float32)
    x[300:] = x[:300] + rng.normal(scale=0.3, size=(300, 16))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    order = rng.permutation(len(x))
    sel = greedy_diverse_select(x, order, threshold=0.9, block=64)
    slow: list[int] = []
    for r in order:  # the definition: compare with every row kept so far
        if not slow or float((x[slow] @ x[r]).max()) <= 0.9:
            slow.append(int(r))
    assert sel.selected.tolist() == slow and sel.examined == len(order)
    budget = greedy_diverse_select(x, order, threshold=0.9, budget=50, block=64)
    assert budget.selected.tolist() == slow[:50]
    # Past exact_limit the set answers from an IVF index; on these data it finds the same nearest rows.
    s = SelectedSet(16, exact_limit=100)
    s.add(x[:400])
    assert s.approximate
    sims, idx = s.max_similarity(x[400:])
    want, want_idx = max_similarity_to_set(x[400:], x[:400])
    assert np.mean(idx == want_idx) >= 0.95 and np.allclose(sims[idx == want_idx], want[idx == want_idx], atol=1e-5)


KILL = textwrap.dedent("""
    import os, signal, sys
    from pipeline.embeddings import store as embstore
    from pipeline.stages.semdedup import run_semdedup
    from pipeline.store import DatasetWriter
    phase, inp, out, work = sys.argv[1:5]
    target = (embstore, "write_shard") if phase == "embed" else (DatasetWriter, "write_shard")
    orig, seen = getattr(*target), []
    def killing(*a, **kw):
        r = orig(*a, **kw)
        seen.append(1)
        if len(seen) == 2:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, like a power cut
        return r
    setattr(target[0], target[1], killing)
    from pipeline.stages.semdedup.config import SemdedupConfig
    run_semdedup(inp, out, SemdedupConfig(fast=True, fast_threshold=0.85), workdir=work, shard_rows=5, progress=False)
""")


@pytest.mark.parametrize("phase", ["embed", "write"])
def test_resume_after_kill(tmp_path, fast, phase):
    inp = make_dataset(tmp_path / "in", paraphrase_rows())
    cfg = SemdedupConfig(fast=True, fast_threshold=0.85)
    ref = run_semdedup(inp, tmp_path / "ref", cfg, workdir=tmp_path, shard_rows=5, embedder=fast, progress=False)
    proc = subprocess.run([sys.executable, "-c", KILL, phase, str(inp), str(tmp_path / "out"), str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not (tmp_path / "out" / "_manifest.json").exists()
    m = run_semdedup(inp, tmp_path / "out", cfg, workdir=tmp_path, shard_rows=5, embedder=fast, progress=False)
    if phase == "embed":
        assert m["embed"]["shards_resumed"] == 2
    else:
        assert m["shards_skipped_on_resume"] == 2 and m["embed"]["shards_resumed"] == m["shards"]
    assert (m["rows_out"], m["rows_rejected"]) == (ref["rows_out"], ref["rows_rejected"])
    assert dropped(tmp_path / "out").keys() == dropped(tmp_path / "ref").keys()
    kept = sorted(r["id"] for r in Dataset(tmp_path / "out").read(columns=["id"]).to_pylist())
    assert kept == sorted(r["id"] for r in Dataset(tmp_path / "ref").read(columns=["id"]).to_pylist())


def test_against_a_published_dataset_uses_its_stored_embeddings(tmp_path, fast):
    pub = make_dataset(tmp_path / "pubin", [row(a) for a, _ in PARAPHRASES] + [row(UNRELATED[0])])
    run_semdedup(pub, tmp_path / "pub", SemdedupConfig(fast=True), workdir=tmp_path, embedder=fast, progress=False)
    new_rows = [row(b) for _, b in PARAPHRASES[:3]] + [row(u) for u in UNRELATED[1:4]] + [row(UNRELATED[4]), row(UNRELATED[4] + " ")]
    inp = make_dataset(tmp_path / "new", new_rows)
    cfg = SemdedupConfig(fast=True, fast_threshold=0.85, against=str(tmp_path / "pub"), cache=False)
    before = fast.rows_encoded
    m = run_semdedup(inp, tmp_path / "out", cfg, workdir=tmp_path, embedder=fast, progress=False)
    assert fast.rows_encoded - before == len(new_rows)  # the published rows came from its _embeddings/
    drops = dropped(tmp_path / "out")
    reasons = {r["instruction"]: r["drop_reason"] for r in drops.values()}
    pub_ids = {r["id"] for r in Dataset(tmp_path / "pub").read(columns=["id"]).to_pylist()}
    existing = [r for r in drops.values() if r["drop_reason"] == "semantic_duplicate_of_existing"]
    assert existing and all(r["semdedup_cluster"] in pub_ids for r in existing)
    assert not any(u in reasons for u in UNRELATED[1:4])
    assert m["against"]["dropped"] == len(existing)


def test_against_with_verify_and_stored_embeddings_found_upstream(tmp_path, fast, full):
    # The published dataset is a later stage's output (no _embeddings/ of its own) whose
    # rows passed through a semdedup folder: that folder's stored vectors are used.
    pub_rows = [row(a) for a, _ in PARAPHRASES] + [row(UNRELATED[0])]
    run_semdedup(make_dataset(tmp_path / "pubin", pub_rows), tmp_path / "sd", SemdedupConfig(fast=True),
                 workdir=tmp_path, embedder=fast, progress=False)
    w = DatasetWriter(tmp_path / "pub", "select")
    w.write_shard(0, Dataset(tmp_path / "sd").read().slice(0, 6))
    w.write_manifest(input=str(tmp_path / "sd"))
    pub_ids = {r["id"] for r in Dataset(tmp_path / "pub").read(columns=["id"]).to_pylist()}
    new_rows = [row(b) for _, b in PARAPHRASES] + [row(u) for u in UNRELATED[1:5]]
    inp = make_dataset(tmp_path / "new", new_rows)
    cfg = SemdedupConfig(fast=True, verify=True, against=str(tmp_path / "pub"), cache=False)
    before = fast.rows_encoded
    m = run_semdedup(inp, tmp_path / "out", cfg, workdir=tmp_path, embedder=fast, full_embedder=full, progress=False)
    assert fast.rows_encoded - before == len(new_rows)
    assert m["against"]["stored_embeddings"] == str(tmp_path / "sd") and m["against"]["rows"] == 6
    drops = dropped(tmp_path / "out")
    # Exactly the rewordings of published rows go (the full model confirmed each), naming the published row.
    want = {records.make_id(b) for a, b in PARAPHRASES if records.make_id(a) in pub_ids}
    assert set(drops) == want and len(want) >= 3
    for d in drops.values():
        assert d["drop_reason"] == "semantic_duplicate_of_existing" and d["semdedup_cluster"] in pub_ids
        assert records.get_meta(d, "semdedup")["cosine"] >= 0.95 and '"' in d["drop_detail"]
    assert m["against"]["verified_threshold"] == 0.95 and m["against"]["dropped"] == len(want)


def test_full_model_batch_size_is_tuned_on_the_real_rows_across_calls():
    from pipeline.embeddings.embedder import load_embedder
    texts = [a for pair in PARAPHRASES for a in pair] + UNRELATED
    texts = [f"{t} ({k})" for k in range(3) for t in texts]  # 84 distinct rows
    tuned = load_embedder("minilm", device="cpu")
    tuned.CPU_CANDIDATES, tuned.CPU_TRIAL_ROWS = (4, 8), 16  # small trials so the test stays quick
    first = tuned.encode(texts[:40])  # 32 rows of warm-up, then too few left to time a trial
    assert tuned.batch_size is None and tuned.tuning is None
    rest = tuned.encode(texts[40:])   # two timed 16-row trials, then the winner for the rest
    assert tuned.batch_size in (4, 8) and set(tuned.tuning) == {"4", "8"}
    fixed = load_embedder("minilm", device="cpu", batch_size=16)
    want = fixed.encode(texts)
    assert fixed.tuning is None and fixed.batch_size == 16
    # Every row encoded once, in order, whatever batch it went through.
    assert np.abs(np.concatenate([first, rest]) - want).max() < 1e-4
    # Calls of 12 rows never hold two batches of 8: the search stops below it.
    small = load_embedder("minilm", device="cpu")
    small.CPU_CANDIDATES, small.CPU_TRIAL_ROWS = (4, 8), 8
    got = np.concatenate([small.encode(texts[a:a + 12]) for a in range(0, 36, 12)])
    assert small.batch_size == 4 and set(small.tuning) == {"4"}
    assert np.abs(got - want[:36]).max() < 1e-4


def test_first_use_of_the_fast_model_says_it_is_building_it(tmp_path, monkeypatch, fast):
    import model2vec.distill
    from model2vec import StaticModel

    from pipeline.embeddings.embedder import StaticEmbedder
    built = []

    def distill(model_name, pca_dims):  # stands in for the 2-minute distillation: the real result, reloaded
        built.append(model_name)
        return StaticModel.from_pretrained(str(fast.path))

    monkeypatch.setattr(model2vec.distill, "distill", distill)
    said: list[str] = []
    e = StaticEmbedder("minilm", cache_dir=tmp_path, notify=said.append)
    assert len(built) == 1 and len(said) == 1 and "once" in said[0] and str(e.path) in said[0]
    assert "DISTILL_MODEL_CACHE" in said[0]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [e.path.name]  # no temp left
    again = StaticEmbedder("minilm", cache_dir=tmp_path, notify=said.append)
    assert len(built) == 1 and len(said) == 1  # built once, then reused silently
    assert np.array_equal(again.encode(["a test"]), fast.encode(["a test"]))


def test_cli_on_ray_actors_gives_the_local_result(tmp_path, fast, ray_cluster):
    from typer.testing import CliRunner

    from pipeline.cli import app
    inp = make_dataset(tmp_path / "in", paraphrase_rows(), shard_rows=5)
    ref = run_semdedup(inp, tmp_path / "ref", SemdedupConfig(fast=True, fast_threshold=0.85), workdir=tmp_path,
                       shard_rows=6, embedder=fast, progress=False)
    res = CliRunner().invoke(app, ["semdedup", str(inp), "--out", str(tmp_path / "ray"), "--workdir", str(tmp_path / "w"),
                                   "--fast", "--shard-rows", "6", "--executor", "ray", "--no-progress",
                                   "-c", str(_config(tmp_path, "[semdedup]\nfast_threshold = 0.85\n"))])
    assert res.exit_code == 0, res.output
    assert "embedded on Ray" in res.output and "distill inspect" in res.output
    m = json.loads((tmp_path / "ray" / "_manifest.json").read_text())
    assert m["embed"]["executor"] == "ray" and m["embed"]["rows_sent_to_actors"] == len(paraphrase_rows())
    assert (m["rows_out"], m["rows_rejected"]) == (ref["rows_out"], ref["rows_rejected"]) and ref["rows_rejected"] > 0
    assert Dataset(tmp_path / "ray").rejected().read().equals(Dataset(tmp_path / "ref").rejected().read())
    assert Dataset(tmp_path / "ray").read().equals(Dataset(tmp_path / "ref").read())


def _config(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "distill.toml"
    p.write_text(text)
    return p


def test_config_errors_are_one_line():
    from pipeline.config import ConfigError, load_config, stage_config
    cfg = load_config(None)
    with pytest.raises(ConfigError, match=r"\[semdedup\].*verify"):
        stage_config(cfg, "semdedup", SemdedupConfig, verify=True)
    with pytest.raises(ConfigError, match=r"\[semdedup\] search"):
        stage_config(cfg, "semdedup", SemdedupConfig, search="lsh")
    assert SemdedupConfig().search_threshold() == 0.95 and SemdedupConfig(fast=True).search_threshold() == 0.92


def test_plan_has_semdedup_step():
    from pipeline.plan import default_plan
    names = [s.name for s in default_plan()]
    assert "semdedup" in names
    if "minhash" in names:
        assert names.index("minhash") < names.index("semdedup")


def test_cli_semdedup_then_inspect(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from pipeline.cli import app
    inp = make_dataset(tmp_path / "in", paraphrase_rows())
    runner = CliRunner()
    res = runner.invoke(app, ["semdedup", str(inp), "--out", str(tmp_path / "out"), "--workdir", str(tmp_path / "w"),
                              "--fast", "--threshold", "0.93", "--no-progress"])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert f"{m['rows_rejected']} dropped" in res.output and m["settings"]["threshold"] == 0.93
    assert (tmp_path / "w" / "cache" / "embeddings").is_dir()
    res = runner.invoke(app, ["inspect", str(tmp_path / "out"), "--rejected", "-n", "1"])
    assert res.exit_code == 0 and "semantic_duplicate" in res.output
    res = runner.invoke(app, ["semdedup", str(tmp_path / "nope"), "--out", str(tmp_path / "o2")])
    assert res.exit_code != 0 and "no such dataset" in str(res.exception)


def test_fast_embedder_pooling_matches_model2vec(fast):
    texts = [a for a, _ in PARAPHRASES] + UNRELATED + ["", "x" * 5000, "naïve café ☕ 東京"]
    ours = fast.encode(texts)
    theirs = fast.model.encode(texts, max_length=fast.max_length, use_multiprocessing=False)
    norms = np.linalg.norm(theirs, axis=1, keepdims=True)
    theirs = theirs / np.where(norms == 0, 1, norms)
    assert np.abs((ours * theirs).sum(1) - (norms[:, 0] > 0)).max() < 2e-3


@pytest.mark.parametrize("search", ["ivf", "kmeans"])
def test_approximate_search_through_the_stage_reports_its_recall(tmp_path, fast, search):
    inp = make_dataset(tmp_path / "in", paraphrase_rows())
    cfg = SemdedupConfig(fast=True, search=search, fast_threshold=0.85)
    m = run_semdedup(inp, tmp_path / "out", cfg, workdir=tmp_path, embedder=fast, progress=False)
    ref = run_semdedup(inp, tmp_path / "ref", SemdedupConfig(fast=True, search="exact", fast_threshold=0.85),
                       workdir=tmp_path, embedder=fast, progress=False)
    assert m["search"]["method"] == search and ref["search"]["method"] == "exact"
    est = m["search"]["recall_vs_exact_sampled"]
    assert est["sample_rows"] == len(paraphrase_rows()) and est["recall"] == 1.0  # tiny input: one cell, exact
    assert dropped(tmp_path / "out").keys() == dropped(tmp_path / "ref").keys()
