"""The Ray executor runs the same shards as the local one: same rows, markers, manifest, resume.

Ray tests share one local cluster (`ray_cluster`, 2 CPUs) and keep inputs tiny;
the shard planning and storage tests need no Ray at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow.fs as pafs
import pytest
import ray_support

from pipeline.context import RunContext
from pipeline.runner import run_shards
from pipeline.store import Dataset, DatasetError, DatasetWriter, merge_markers, stage_shard
from pipeline.store import location as storage
from pipeline.store.shards import plan_shards


def _ctx(**kw):
    return RunContext(run_id="r", progress=False, **kw)


def _comparable(m):
    totals = {k: v for k, v in m["totals"].items() if k != "seconds"}
    return (m["rows_in"], m["rows_out"], m["rows_rejected"], m["drops"], m["shards"], totals,
            m["settings"], m["shard_rows"], m["limit"], m["input"])


def _same_data(a, b):
    da, db = Dataset(a, require_complete=True), Dataset(b, require_complete=True)
    assert [p.name for p in da.shards] == [p.name for p in db.shards]
    assert da.read().equals(db.read())
    ra, rb = da.rejected(), db.rejected()
    assert (ra is None and rb is None) or ra.read().equals(rb.read())


def _no_temporaries(folder):
    return [str(p) for p in folder.rglob(".*tmp-*")]


# -- without Ray -----------------------------------------------------------------

@pytest.mark.parametrize("shard_rows,limit", [(10, None), (7, None), (4, 13), (100, None), (3, 1)])
def test_shard_plan_reads_exactly_the_rows_iter_shards_gives(tmp_path, shard_rows, limit):
    ds, _ = ray_support.numbered_dataset(tmp_path / "in", 25, per_file=7)
    specs = plan_shards(ds.files(), shard_rows, limit)
    want = list(ds.iter_shards(shard_rows, limit))
    assert [s.index for s in specs] == [i for i, _ in want]
    assert [s.read_rows() for s in specs] == [rows for _, rows in want]


def test_uris_survive_pathlib_and_resolve_to_filesystems(tmp_path):
    from pathlib import Path
    assert storage.normalize(Path("s3://bucket/runs/x")) == "s3://bucket/runs/x"
    assert storage.normalize(Path("file:///tmp/a")) == "file:///tmp/a"
    assert storage.normalize("work/run") == "work/run" and not storage.is_uri("work/run")
    loc = storage.resolve(f"file://{tmp_path}/out")
    assert loc.local and loc.path == f"{tmp_path}/out"
    rel = storage.resolve("relative/dir")
    assert rel.local and os.path.isabs(rel.path)


def test_object_store_layout_on_a_subtree_filesystem(tmp_path):
    """Non-local filesystems take the object-store path: staged objects, commit, marker, manifest."""
    ds, rows = ray_support.numbered_dataset(tmp_path / "in", 9, per_file=9)
    (tmp_path / "bucket").mkdir()
    fs = pafs.SubTreeFileSystem(str(tmp_path / "bucket"), pafs.LocalFileSystem())
    out = storage.resolve("runs/evenfilter", filesystem=fs)
    plan = {"input": "x", "shard_rows": 5, "limit": None, "settings": {}}
    folder = DatasetWriter(out, "evenfilter", plan=plan)
    assert not folder.loc.local
    stage = ray_support.EvenFilter()
    markers = []
    for spec in plan_shards(ds.files(), 5):
        res = stage.process(spec.read_rows(), _ctx())
        staged = stage_shard(folder.loc, spec.index, res.kept, res.rejected, stage=stage.name)
        # staged objects are hidden: not a shard until committed
        assert not (tmp_path / "bucket" / "runs" / "evenfilter" / f"part-{spec.index:05d}.parquet").exists()
        assert staged.kept.name.startswith(".part-")
        markers.append(folder.commit(staged, {"rows_in": spec.rows, **res.stats}))
    m = folder.write_manifest(run_id="r")
    back = Dataset(out, require_complete=True)
    assert [r["id"] for r in back.iter_rows()] == [r["id"] for r in rows if int(r["instruction"].split()[1]) % 2 == 0]
    assert (m["rows_in"], m["rows_out"], m["rows_rejected"], m["drops"]) == (9, 5, 4, {"odd_number": 4})
    assert out.join("_manifest.json").read_json()["rows_out"] == 5
    # the same markers give the same manifest body as store.DatasetWriter's
    local = DatasetWriter(tmp_path / "local", "evenfilter")
    for i, mk in enumerate(markers):
        local.write_shard(i, [], None, {k: v for k, v in mk.items() if k not in ("shard", "rows_out", "rows_rejected", "drops")})
    body = {k: v for k, v in merge_markers("evenfilter", markers).items() if k not in ("created_at",)}
    lm = {k: v for k, v in local.write_manifest().items() if k not in ("created_at",)}
    assert body["totals"] == lm["totals"] and body["rows_in"] == lm["rows_in"] and body["shards"] == lm["shards"]
    # the folder reads back as an input through the same filesystem, in the same shards
    again = plan_shards(back.files(), 2)
    assert [r["id"] for spec in again for r in spec.read_rows()] == [r["id"] for r in back.iter_rows()]
    # resume with other settings is refused, as locally
    with pytest.raises(DatasetError, match="shard_rows"):
        DatasetWriter(out, "evenfilter", plan=dict(plan, shard_rows=6))
    assert DatasetWriter(out, "evenfilter", plan=plan).is_done(1)


@pytest.mark.parametrize("command", [["minhash", "DATA"], ["orca", "DATA"], ["score", "DATA"], ["evol-instruct", "DATA"]])
def test_every_ray_capable_command_gives_the_install_hint_without_ray(tmp_path, command):
    code = ("import sys; sys.modules['ray'] = None; sys.argv = ['distill', *sys.argv[1:]]; "
            "from pipeline.cli import main; main()")
    args = [str(tmp_path / "in") if a == "DATA" else a for a in command]
    res = subprocess.run([sys.executable, "-c", code, *args, "--executor", "ray", "--workdir", str(tmp_path)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().count("\n") == 0 and "pip install 'distill[ray]'" in res.stderr, res.stderr
    assert not (tmp_path / "in").exists() and not any(tmp_path.glob("run-*/*"))  # nothing started


def test_missing_ray_is_a_one_line_install_hint(tmp_path, monkeypatch):
    from pipeline.errors import MissingExtra
    from pipeline.executors.ray_runtime import import_ray
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees without the extra
    with pytest.raises(MissingExtra, match=r"pip install 'distill\[ray\]'"):
        import_ray()
    code = ("import sys; sys.modules['ray'] = None; sys.argv = ['distill', *sys.argv[1:]]; "
            "from pipeline.cli import main; main()")
    (tmp_path / "d.toml").write_text("")  # a config of one's own: no demo-profile note on stderr
    res = subprocess.run([sys.executable, "-c", code, "run", "--executor", "ray", "--workdir", str(tmp_path),
                          "--config", str(tmp_path / "d.toml")], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().count("\n") == 0 and "pip install 'distill[ray]'" in res.stderr
    assert "Traceback" not in res.stderr


def test_cli_options_reach_the_context(tmp_path):
    from pipeline.config import ConfigError
    from pipeline.context import load, make_context, resolve_run
    from pipeline.teacher.factory import TeacherFactory
    cfg = load(None, workdir=tmp_path, executor="ray", ray_address="auto")
    assert (cfg.run.executor, cfg.run.ray_address) == ("ray", "auto")
    ctx = make_context(cfg, resolve_run(cfg, tmp_path))
    assert (ctx.executor.name, ctx.ray_address) == ("ray", "auto")
    assert isinstance(ctx.teacher_factory, TeacherFactory) and ctx.teacher_factory.workdir.is_absolute()
    with pytest.raises(ConfigError, match="run.executor"):
        load(None, executor="spark")


# -- on a local Ray cluster --------------------------------------------------------

@pytest.fixture
def ray_(ray_cluster):
    ray_support.register(ray_cluster)
    return ray_cluster


def test_ray_equals_local_and_resumes_a_local_folder(tmp_path, ray_):
    ds, _ = ray_support.numbered_dataset(tmp_path / "in", 45, per_file=7)
    local = run_shards(ray_support.EvenFilter(), ds, tmp_path / "local", _ctx(), shard_rows=10)
    # a local run that stops after two shards, finished on Ray
    part = run_shards(ray_support.EvenFilter(), ds, tmp_path / "mixed", _ctx(), shard_rows=10, limit=20)
    assert part["shards"] == 2
    with pytest.raises(DatasetError, match="limit"):  # a resume must keep the settings, Ray or not
        run_shards(ray_support.EvenFilter(), ds, tmp_path / "mixed", _ctx(), shard_rows=10, executor="ray")
    plan = json.loads((tmp_path / "mixed" / "_plan.json").read_text())  # the same folder, now without a limit
    (tmp_path / "mixed" / "_plan.json").write_text(json.dumps(dict(plan, limit=None)))
    (tmp_path / "mixed" / "_manifest.json").unlink()
    done = sorted(p.name for p in (tmp_path / "mixed" / "_done").iterdir())
    m = run_shards(ray_support.EvenFilter(), ds, tmp_path / "mixed", _ctx(), shard_rows=10, executor="ray")
    assert m["shards_skipped_on_resume"] == len(done) == 2 and m["executor"] == "ray"
    assert _comparable(m) == _comparable(local)
    _same_data(tmp_path / "local", tmp_path / "mixed")
    # and a fresh Ray run, through ctx.executor (what the CLI sets)
    m2 = run_shards(ray_support.EvenFilter(), ds, tmp_path / "ray", _ctx(executor="ray"), shard_rows=10)
    assert _comparable(m2) == _comparable(local) and m2["ray_workers"] == 2
    _same_data(tmp_path / "local", tmp_path / "ray")
    assert not _no_temporaries(tmp_path / "ray")


def test_worker_killed_mid_shard_redoes_that_shard_once(tmp_path, ray_):
    ds, _ = ray_support.numbered_dataset(tmp_path / "in", 30, per_file=8)
    run_shards(ray_support.EvenFilter(), ds, tmp_path / "local", _ctx(), shard_rows=10)
    marker = tmp_path / "killed.pid"
    stage = ray_support.KillOnce(str(marker), victim="task 14 with some words")
    m = run_shards(stage, ds, tmp_path / "ray", _ctx(), shard_rows=10, executor="ray")
    assert marker.exists()  # the first attempt did die inside process()
    ids = [r["id"] for r in Dataset(tmp_path / "ray").iter_rows()]
    assert len(ids) == len(set(ids)) == 15 and m["rows_in"] == 30
    _same_data(tmp_path / "local", tmp_path / "ray")
    assert not _no_temporaries(tmp_path / "ray")


class _FailOn(ray_support.EvenFilter):
    def __init__(self, victim):
        self.victim = victim

    def process(self, rows, ctx):
        from pipeline.errors import TeacherUnavailable
        if any(r["instruction"] == self.victim for r in rows):
            raise TeacherUnavailable("teacher at http://x is unreachable")
        return super().process(rows, ctx)


def test_a_stage_error_surfaces_as_itself_and_a_rerun_resumes(tmp_path, ray_):
    from pipeline.errors import TeacherUnavailable
    ray_support.register(ray_)
    ray_.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ds, _ = ray_support.numbered_dataset(tmp_path / "in", 40, per_file=40)
    with pytest.raises(TeacherUnavailable, match="unreachable"):
        run_shards(_FailOn("task 0 with some words"), ds, tmp_path / "out", _ctx(), shard_rows=10, executor="ray")
    assert not Dataset(tmp_path / "out").complete
    done = {p.name for p in (tmp_path / "out" / "_done").iterdir()}
    assert "part-00000.json" not in done  # the failed shard is not committed; others may be
    m = run_shards(ray_support.EvenFilter(), ds, tmp_path / "out", _ctx(), shard_rows=10, executor="ray")
    assert m["shards_skipped_on_resume"] == len(done) and m["rows_out"] == 20


def test_file_uri_output_is_the_same_folder(tmp_path, ray_):
    ds, _ = ray_support.numbered_dataset(tmp_path / "in", 12, per_file=5)
    run_shards(ray_support.EvenFilter(), ds, tmp_path / "local", _ctx(), shard_rows=4)
    run_shards(ray_support.EvenFilter(), ds, f"file://{tmp_path}/viauri", _ctx(), shard_rows=4, executor="ray")
    _same_data(tmp_path / "local", tmp_path / "viauri")


def test_distill_run_on_ray_equals_local(tmp_path, ray_):
    """`distill run --executor ray` from minhash on: minhash's phases and score's shards on Ray,
    export in the driver (and said so); the release is the local executor's, byte for byte."""
    from pipeline.context import load, resolve_run
    from pipeline.runplan import run_plan

    w = DatasetWriter(tmp_path / "in", "import")
    from pipeline import records
    rows = [records.new_row(f"please describe item number {i % 10} in one long and detailed sentence with many words",
                            "", f"answer {i}", origin="import") for i in range(30)]  # near-duplicates: same i % 10
    for k in range(0, 30, 7):
        w.write_shard(k // 7, rows[k:k + 7])
    w.write_manifest()
    (tmp_path / "d.toml").write_text("[run]\nshard_rows = 8\n[minhash]\nshard_rows = 8\n")
    out = {}
    for executor in ("local", "ray"):
        cfg = load(tmp_path / "d.toml", workdir=tmp_path / executor, executor=executor)
        said: list[str] = []
        paths = resolve_run(cfg, tmp_path / executor, "r")
        s = run_plan(cfg, paths, start="minhash", skip=["semdedup", "select"], input=tmp_path / "in",
                     progress=False, echo=said.append)
        out[executor] = (paths.run_dir, s, said)
    (lr, ls, lsaid), (rr, rs, rsaid) = out["local"], out["ray"]
    assert rs["final_rows"] == ls["final_rows"] == 10  # one row per item number survives minhash
    assert Dataset(rr / "score").manifest()["executor"] == "ray" and Dataset(rr / "minhash").manifest()["workers"] == 2
    assert "[export] runs in this process, not on Ray" in " ".join(rsaid) and "not on Ray" not in " ".join(lsaid)
    for st in ("minhash", "score"):
        _same_data(lr / st, rr / st)
    release = sorted(p.name for p in (lr / "export").glob("*.parquet"))
    assert release and release == sorted(p.name for p in (rr / "export").glob("*.parquet"))
    for name in release:
        assert (lr / "export" / name).read_bytes() == (rr / "export" / name).read_bytes()
