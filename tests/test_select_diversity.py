"""Deita's diversity as Deita defines it: the whole conversation is embedded, the threshold is relative to the
embedder (a quantile of the pool's own nearest-neighbour cosines), and the budget defaults to the release size."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import load_config
from pipeline.context import RunContext, RunPaths
from pipeline.embeddings.embedder import Embedder
from pipeline.errors import ConfigError
from pipeline.records import new_row
from pipeline.runplan import run_plan
from pipeline.stages.export.cli import SPEC as EXPORT
from pipeline.stages.select.calibrate import nearest_neighbour_cosines
from pipeline.stages.select.cli import SPEC as SELECT
from pipeline.stages.select.cli import release_budget
from pipeline.stages.select.config import DEFAULT_BUDGET, SelectConfig
from pipeline.stages.select.stage import run_select
from pipeline.stages.select.text import conversation_text, fair_shares
from pipeline.store import Dataset, DatasetWriter
from tests.test_select import ArraySource, clustered, make_pool, unit


class Recorder(Embedder):
    """A real Embedder whose vectors are a pseudo-random function of the text; it keeps every text it embeds."""

    name = "recorder|test"
    dim = 32

    def __init__(self, max_length: int | None = None):
        super().__init__()
        self.max_length = max_length
        self.texts: list[str] = []

    def _encode(self, texts):
        self.texts += texts
        seeds = [int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little") for t in texts]
        return np.stack([np.random.default_rng(s).normal(size=self.dim) for s in seeds]).astype(np.float32)


@pytest.fixture
def recorder(monkeypatch):
    rec = Recorder()
    monkeypatch.setattr("pipeline.embeddings.encoder.load_embedder", lambda *a, **kw: rec)
    return rec


def write_pool(path, rows):
    w = DatasetWriter(path, "score")
    w.write_shard(0, rows)
    w.write_manifest()
    return path


def test_the_embedded_text_is_the_whole_conversation(tmp_path, recorder):
    chat = [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Name a sea."},
            {"role": "assistant", "content": "The Caribbean."}, {"role": "user", "content": "And a colder one?"},
            {"role": "assistant", "content": "The Barents Sea."}]
    rows = [new_row("Summarise the text.", "Tides follow the moon.", "The moon drives the tides.", origin="seed", score=2.0),
            new_row("Name a sea.", "", "The Caribbean.", origin="seed", score=1.0, messages=chat, system="You are a pirate.")]
    m = run_select(write_pool(tmp_path / "in", rows), tmp_path / "out", SelectConfig(), workdir=tmp_path / "w",
                   progress=False)
    assert sorted(recorder.texts) == sorted([
        "Summarise the text.\n\nTides follow the moon.\n\nThe moon drives the tides.",
        "Name a sea.\n\nThe Caribbean.\n\nAnd a colder one?\n\nThe Barents Sea."])  # every turn, no system turn
    assert m["embedded_text"] == {"mode": "conversation", "max_chars": 1024}  # 256 tokens (unknown) x 4


def test_a_long_prompt_keeps_the_instruction_and_the_answer_head_within_the_window(tmp_path, monkeypatch):
    rec = Recorder(max_length=128)  # 128 tokens: a 512-character window
    monkeypatch.setattr("pipeline.embeddings.encoder.load_embedder", lambda *a, **kw: rec)
    context = "The river. " * 400
    rows = [new_row("Where does the river in this passage flow?", context, "It flows east. " * 60, origin="seed", score=1.0)]
    m = run_select(write_pool(tmp_path / "in", rows), tmp_path / "out", SelectConfig(), workdir=tmp_path / "w",
                   progress=False)
    assert m["embedded_text"]["max_chars"] == 512
    [text] = rec.texts
    instruction, context_head, answer = text.split("\n\n")
    assert len(text) <= 512
    assert instruction == "Where does the river in this passage flow?" and answer.startswith("It flows east.")
    assert len(answer) >= 250 and len(instruction) + len(context_head) >= 250  # both long: half the window each


def test_fair_shares_keep_short_turns_whole_and_split_the_rest():
    assert fair_shares([10, 500, 900], 400) == [10, 195, 195]
    assert fair_shares([10, 20], 100) == [10, 20]
    row = {"instruction": "Translate to French.", "input": "", "output": "Bonjour " * 500, "messages": None}
    text = conversation_text(row, 300)
    assert text.startswith("Translate to French.\n\nBonjour") and len(text) <= 300


def test_cache_keys_follow_the_embedded_text(tmp_path, recorder):
    rows = [new_row(f"Task {i}", "", f"Answer {i}", origin="seed", score=float(i)) for i in range(6)]
    pool = write_pool(tmp_path / "in", rows)
    w = tmp_path / "w"
    m = run_select(pool, tmp_path / "o1", SelectConfig(text="fields"), workdir=w, progress=False)
    assert m["walk"]["embedding_cache"]["misses"] == 6
    m = run_select(pool, tmp_path / "o2", SelectConfig(), workdir=w, progress=False)
    assert m["walk"]["embedding_cache"]["misses"] == 6  # instruction + input vectors are not the conversation's
    assert m["walk"]["embedding_cache"]["hits"] == 6  # the walk finds the vectors the threshold's sample embedded
    changed = [dict(r, output="Another answer", messages=None) if i == 3 else r for i, r in enumerate(rows)]
    m = run_select(write_pool(tmp_path / "in2", changed), tmp_path / "o3", SelectConfig(), workdir=w, progress=False)
    # only the row whose answer changed is embedded again (its id, from instruction + input, did not change)
    assert m["walk"]["embedding_cache"]["misses"] == 1 and recorder.texts[-1] == "Task 3\n\nAnother answer"


def pruned_share(m) -> float:
    return m["drops"].get("too_similar", 0) / m["rows_in"]


def test_the_threshold_follows_the_pools_own_distribution(tmp_path):
    """Two pools, tight and loose clusters: the absolute 0.9 prunes one heavily and the other barely; the
    default resolves a different cosine for each and prunes a similar share of both."""
    n = 1500
    tight, loose = clustered(n, dim=16, centres=60, spread=0.3, seed=1), clustered(n, dim=16, centres=60, spread=1.0, seed=2)
    path, _ = make_pool(tmp_path, n)
    got = {}
    for name, vecs in (("tight", tight), ("loose", loose)):
        got[name] = run_select(path, tmp_path / name, SelectConfig(), source=ArraySource(vecs), progress=False)
        got[name + "_abs"] = run_select(path, tmp_path / f"{name}_abs", SelectConfig(threshold=0.9),
                                        source=ArraySource(vecs), progress=False)
    t, lo = got["tight"]["threshold"], got["loose"]["threshold"]
    assert t["mode"] == lo["mode"] == "quantile" and t["quantile"] == 0.9 and t["sample_rows"] == n
    assert t["value"] - lo["value"] > 0.08
    assert abs(pruned_share(got["tight"]) - pruned_share(got["loose"])) < 0.03
    assert 0.02 < pruned_share(got["loose"]) < 0.15
    assert pruned_share(got["tight_abs"]) > 3 * pruned_share(got["loose_abs"])
    assert got["tight_abs"]["threshold"] == {"mode": "absolute", "value": 0.9}


def test_the_manifest_records_the_threshold_and_the_budget(tmp_path):
    n = 400
    vecs = clustered(n, spread=0.3, seed=4)
    path, _ = make_pool(tmp_path, n)
    m = run_select(path, tmp_path / "out", SelectConfig(), source=ArraySource(vecs), progress=False)
    want = float(np.quantile(nearest_neighbour_cosines(vecs), 0.9))
    assert m["threshold"]["mode"] == "quantile" and m["threshold"]["value"] == pytest.approx(want, abs=1e-5)
    assert m["budget"] == DEFAULT_BUDGET and m["budget_source"] == "default" and not m["budget_met"]
    rej = Dataset(tmp_path / "out").rejected().read().to_pylist()
    assert rej and all(f"> {m['threshold']['value']:.6g}" in r["drop_detail"] for r in rej if r["drop_reason"] == "too_similar")
    again = run_select(path, tmp_path / "out", SelectConfig(), source=ArraySource(vecs), progress=False)
    assert again["walk_resumed"] and again["threshold"] == m["threshold"]
    m = run_select(path, tmp_path / "q", SelectConfig(threshold_quantile=0.5, budget="all"), source=ArraySource(vecs),
                   progress=False)
    assert m["threshold"]["value"] == pytest.approx(float(np.quantile(nearest_neighbour_cosines(vecs), 0.5)), abs=1e-5)
    assert m["budget"] is None and m["budget_source"] == "config"
    m = run_select(path, tmp_path / "small", SelectConfig(budget=50), source=ArraySource(vecs), progress=False)
    assert m["threshold"]["sample_rows"] == 50 and m["selected"] == 50 and m["budget_source"] == "config"


def config_file(tmp_path, export: str, emb) -> object:
    p = tmp_path / "distill.toml"
    p.write_text(f'[select]\nembeddings = "{emb}"\n\n[export]\n{export}\n')
    return p


def orthogonal_pool(tmp_path, n=100):
    path, _ = make_pool(tmp_path, n)
    np.save(tmp_path / "emb.npy", unit(np.eye(n, dtype=np.float32)))  # nothing is too similar
    return path, tmp_path / "emb.npy"


def test_in_a_run_the_default_budget_is_the_export_size(tmp_path):
    pool, emb = orthogonal_pool(tmp_path)
    cfg = load_config(config_file(tmp_path, "rows = 40", emb))
    paths = RunPaths(tmp_path / "work", "r1")
    run_plan(cfg, paths, plan=[SELECT, EXPORT], input=pool, progress=False, echo=lambda s: None)
    m = Dataset(paths.stage_dir("select")).manifest()
    assert m["budget"] == 40 and m["budget_source"] == "export.rows" and m["selected"] == 40
    assert m["drops"] == {"budget_reached": 60}

    cfg = load_config(config_file(tmp_path, 'tier = "100k"', emb))
    paths = RunPaths(tmp_path / "work", "r2")
    run_plan(cfg, paths, plan=[SELECT], input=pool, progress=False, echo=lambda s: None)
    m = Dataset(paths.stage_dir("select")).manifest()
    # a budget larger than the pool: every row that passes the walk
    assert m["budget"] == 100_000 and m["budget_source"] == "export.tier" and m["selected"] == 100


def test_standalone_select_budget_defaults_and_all(tmp_path):
    pool, emb = orthogonal_pool(tmp_path)
    no_export = tmp_path / "plain.toml"
    no_export.write_text(f'[select]\nembeddings = "{emb}"\n')
    for name, args, budget, source in (
            ("plain", ["--config", str(no_export)], DEFAULT_BUDGET, "default"),
            ("tier", ["--config", str(config_file(tmp_path, "rows = 30", emb))], 30, "export.rows"),
            ("all", ["--config", str(no_export), "--budget", "all"], None, "config")):
        res = CliRunner().invoke(app, ["select", str(pool), "--out", str(tmp_path / name), "--workdir",
                                       str(tmp_path / "w"), "--no-progress", *args])
        assert res.exit_code == 0, res.output
        m = Dataset(tmp_path / name).manifest()
        assert (m["budget"], m["budget_source"]) == (budget, source)
        assert "threshold 0.0000 (the pool's q0.9 nearest-neighbour cosine, " in res.output
    res = CliRunner().invoke(app, ["select", str(pool), "--out", str(tmp_path / "bad"), "--budget", "lots",
                                   "--config", str(no_export)])
    assert isinstance(res.exception, ConfigError) and "--budget 'lots': a row count" in str(res.exception)


def test_against_a_published_pool_the_tier_does_not_size_tonights_rows(tmp_path):
    cfg = load_config(config_file(tmp_path, 'tier = "1m"', "x.npy"))
    ctx = RunContext(run_id="r")
    assert release_budget(cfg, SelectConfig(), ctx) == (1_000_000, "export.tier")
    ctx.against = ("published",)
    assert release_budget(cfg, SelectConfig(), ctx) == (None, None)
    assert release_budget(cfg, SelectConfig(budget=7), ctx) == (7, "config")
