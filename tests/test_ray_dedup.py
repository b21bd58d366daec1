"""Dedup on Ray: MinHash phases as Ray tasks give exactly the local result on real rows;
embeddings computed by Ray actors are the local embed phase's."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.importer import import_file
from pipeline.store import Dataset, DatasetWriter

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def real_rows(shared_data, tmp_path_factory):
    """Dolly 3k + Alpaca 2k (which has natural near-duplicates): ~5k rows, several files."""
    root = tmp_path_factory.mktemp("realdedup")
    parts = []
    for name in ("dolly_3k.json", "alpaca_helpfulness_2k.json"):
        import_file(shared_data / name, root / name, run_id="t", shard_rows=700)
        parts.append(Dataset(root / name).read())
    import pyarrow as pa
    table = pa.concat_tables(parts)
    w = DatasetWriter(root / "in", "import")
    for k in range(0, table.num_rows, 900):
        w.write_shard(k // 900, table.slice(k, 900))
    w.write_manifest()
    return root / "in", table.num_rows


def _result(out):
    ds = Dataset(out, require_complete=True)
    m = ds.manifest()
    keys = ("rows_in", "rows_out", "rows_rejected", "drops", "banding", "candidate_pairs", "candidate_pairs_raw",
            "verified_pairs", "shingles", "empty_text_rows", "signature_format", "shards")
    return ds, {k: m[k] for k in keys}


def test_minhash_on_ray_equals_local_on_real_rows(real_rows, tmp_path, ray_cluster):
    from pipeline.executors.ray_executor import RayExecutor
    from pipeline.stages.minhash import MinhashConfig, run_minhash

    src, n = real_rows
    assert n > 4000
    cfg = MinhashConfig(shard_rows=1000, workers=2, threshold=0.6, keep_work=True)
    run_minhash(src, tmp_path / "local", cfg, run_id="t", progress=False)
    m = run_minhash(src, tmp_path / "ray", cfg, run_id="t", progress=False, executor=RayExecutor())
    assert m["rows_in"] == n
    local, lm = _result(tmp_path / "local")
    ray_, rm = _result(tmp_path / "ray")
    assert rm == lm and lm["rows_rejected"] > 0  # real near-duplicates were found, the same ones
    assert local.read().equals(ray_.read())
    assert local.rejected().read().equals(ray_.rejected().read())
    assert pq.read_table(tmp_path / "local" / "clusters.parquet").equals(pq.read_table(tmp_path / "ray" / "clusters.parquet"))
    for b in range(lm["shards"]):  # the stored signatures (for --against runs) too
        a = np.load(tmp_path / "local" / "_minhash" / f"part-{b:05d}.sig.npy")
        assert np.array_equal(a, np.load(tmp_path / "ray" / "_minhash" / f"part-{b:05d}.sig.npy"))
    # the Ray run's phase files are the local ones (per-block map, per-band reduce)
    work_l, work_r = tmp_path / "local" / "_work", tmp_path / "ray" / "_work"
    names = sorted(p.name for p in work_l.glob("*.npy"))
    assert names == sorted(p.name for p in work_r.glob("*.npy")) and len(names) > 10
    for name in names:
        assert np.array_equal(np.load(work_l / name), np.load(work_r / name)), name
    assert json.loads((work_r / "pairs.done").read_text()) == json.loads((work_l / "pairs.done").read_text())


def test_a_minhash_task_error_is_raised_as_itself(real_rows, tmp_path, ray_cluster):
    import sys

    from pipeline.executors.ray_executor import RayPool
    ray_cluster.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with RayPool(workers=2) as pool:
        assert pool.map(_divide, [{"x": x} for x in (1, 2, 4, 8, 5)]) == [1, 0.5, 0.25, 0.125, 0.2]  # task order
        with pytest.raises(ZeroDivisionError):
            pool.map(_divide, [{"x": 1}, {"x": 0}])


def _divide(task):
    return 1 / task["x"]


@pytest.mark.slow
def test_embeddings_on_ray_actors_are_the_local_embed_phase(real_rows, tmp_path, ray_cluster):
    from pipeline.embeddings.encoder import make_encoder
    from pipeline.executors.ray_executor import RayPool
    from pipeline.stages.semdedup.config import SemdedupConfig
    from pipeline.stages.semdedup.phases import embed_phase

    src, _ = real_rows
    ds = Dataset(src, require_complete=True)
    cfg = SemdedupConfig(device="cpu", cache=False, batch_size=32)
    enc = make_encoder(cfg, tmp_path)
    ids_l, x_l, _ = embed_phase(ds, tmp_path / "local", cfg, enc, 40, 120)
    ids_r, x_r, resumed = embed_phase(ds, tmp_path / "ray", cfg, enc, 40, 120, pool=RayPool(workers=2), workdir=tmp_path)
    assert resumed == 0 and list(ids_r) == list(ids_l) and x_r.shape == x_l.shape == (120, 384)
    # the same model on another process (another thread count): equal up to float16 rounding
    assert float(np.abs(x_r - x_l).max()) < 2e-3
    sim_l, sim_r = x_l @ x_l.T, x_r @ x_r.T
    np.fill_diagonal(sim_l, -1)
    np.fill_diagonal(sim_r, -1)
    assert np.array_equal(sim_l.argmax(1), sim_r.argmax(1))  # every row's nearest neighbour is the same row
    # a rerun resumes from the stored shards without embedding anything
    again = embed_phase(ds, tmp_path / "ray", cfg, enc, 40, 120, pool=RayPool(workers=2), workdir=tmp_path)
    assert again[2] == 3 and np.array_equal(again[1], x_r)


def test_minhash_command_and_run_step_dispatch_to_ray(real_rows, tmp_path, ray_cluster):
    """`distill minhash --executor ray` and `distill run`'s minhash step run the phases on Ray
    (every cluster CPU: 2 workers, where the local executor works inline below 50k rows)."""
    from typer.testing import CliRunner

    from pipeline.cli import app
    from pipeline.context import load, make_context, resolve_run
    from pipeline.stages.minhash import MinhashConfig, run_minhash
    from pipeline.stages.minhash.cli import SPEC

    src, n = real_rows
    local = run_minhash(src, tmp_path / "local", MinhashConfig(shard_rows=2000), run_id="t", progress=False)
    assert local["workers"] == 1
    res = CliRunner().invoke(app, ["minhash", str(src), "--out", str(tmp_path / "cli"), "--workdir", str(tmp_path),
                                   "--shard-rows", "2000", "--executor", "ray", "--no-progress"])
    assert res.exit_code == 0, res.output
    (tmp_path / "d.toml").write_text("[minhash]\nshard_rows = 2000\n")
    cfg = load(tmp_path / "d.toml", workdir=tmp_path, executor="ray")
    paths = resolve_run(cfg, tmp_path)
    step = SPEC.run_step(cfg, src, tmp_path / "step", make_context(cfg, paths, progress=False))
    for out in ("cli", "step"):
        m = Dataset(tmp_path / out, require_complete=True).manifest()
        assert m["workers"] == 2 and m["rows_in"] == n
        assert (m["rows_out"], m["drops"], m["verified_pairs"]) == (local["rows_out"], local["drops"], local["verified_pairs"])
        assert Dataset(tmp_path / out).read(columns=["id", "minhash_cluster"]).equals(
            Dataset(tmp_path / "local").read(columns=["id", "minhash_cluster"]))
    assert step["workers"] == 2
