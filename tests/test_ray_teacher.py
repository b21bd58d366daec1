"""Generation on Ray: one cluster-wide openai budget, per-request seeds, vLLM replica placement,
and a real generation stage (Orca) through the embedded teacher from Ray workers."""

from __future__ import annotations

import json
import os

import pytest
import ray_support

from pipeline.config import TeacherSection
from pipeline.context import RunContext
from pipeline.errors import TeacherUnavailable
from pipeline.executors.limits import ClusterLimits
from pipeline.executors.teacher import replica_options
from pipeline.runner import run_shards
from pipeline.store import Dataset
from pipeline.teacher.base import derive_seed
from pipeline.teacher.factory import TeacherFactory


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_cluster_limits_concurrency_rpm_tpm_and_leases():
    clock = Clock()
    lim = ClusterLimits(2, rpm=3, tpm=100, lease_s=10, clock=clock)
    a, _ = lim.try_acquire(10)
    b, _ = lim.try_acquire(10)
    assert a and b and lim.try_acquire(10) == (None, 0.0)  # all permits out: wait for a release
    lim.release(a, used_tokens=60)  # corrected from the estimate to what the server reported
    c, _ = lim.try_acquire(10)
    assert c and lim.in_flight == 2
    lim.release(b, 5)
    lim.release(c, 5)
    ticket, wait = lim.try_acquire(10)  # a 4th request in the same minute: rpm=3 says wait
    assert ticket is None and 0 < wait <= 60.001
    clock.t += 61
    d, _ = lim.try_acquire(95)
    assert d
    ticket, wait = lim.try_acquire(10)  # 95 + 10 > tpm 100
    assert ticket is None and wait > 0
    # a holder that died: its permit comes back when the lease expires
    lim2 = ClusterLimits(1, lease_s=10, clock=clock)
    x, _ = lim2.try_acquire()
    assert lim2.try_acquire() == (None, 0.0) and 0 < lim2.next_expiry() <= 10.001
    clock.t += 10
    y, _ = lim2.try_acquire()
    assert y and lim2.stats()["expired_leases"] == 1 and lim2.max_in_flight == 1


def test_vllm_replicas_one_per_gpu_or_per_tensor_parallel_group():
    one = TeacherSection(backend="vllm", model="m")
    assert replica_options(one, {"CPU": 64, "GPU": 4}) == [{"num_gpus": 1, "num_cpus": 1}] * 4
    assert len(replica_options(one, {"GPU": 4}, workers=2)) == 2
    tp2 = TeacherSection(backend="vllm", model="m", vllm_args={"tensor_parallel_size": 2})
    assert replica_options(tp2, {"GPU": 5}) == [{"num_gpus": 0, "num_cpus": 1, "gpu_bundles": 2}] * 2
    with pytest.raises(TeacherUnavailable, match="needs GPUs"):
        replica_options(one, {"CPU": 2})


@pytest.fixture
def ray_(ray_cluster):
    ray_support.register(ray_cluster)
    return ray_cluster


@pytest.fixture
def counting_server():
    srv = ray_support.CountingServer(latency_s=0.05)
    yield srv
    srv.close()


def test_openai_concurrency_is_cluster_wide_not_per_worker(tmp_path, ray_, counting_server):
    ds, rows = ray_support.numbered_dataset(tmp_path / "in", 24, per_file=24)
    section = TeacherSection(backend="openai", base_url=counting_server.url, concurrency=3, cache=False)
    barrier_cls = ray_.remote(num_cpus=0)(ray_support.Barrier)

    def run(factory, out):
        counting_server.reset()
        stage = ray_support.EchoStage(barrier=barrier_cls.remote(2))
        ctx = RunContext(run_id="r", seed=11, teacher_factory=factory, progress=False)
        m = run_shards(stage, ds, tmp_path / out, ctx, shard_rows=12, executor="ray")
        return m, counting_server.max_in_flight

    # the configured teacher: every worker takes permits from the run's one limiter
    m, peak = run(TeacherFactory(section, tmp_path, 11), "limited")
    assert m["rows_out"] == 24 and m["ray_workers"] == 2
    assert peak <= 3, f"{peak} requests in flight with a cluster-wide concurrency of 3"
    assert m["teacher_cluster_limits"]["max_in_flight"] <= 3 and m["teacher_cluster_limits"]["granted"] == 24
    assert m["teacher"] == {"backend": "openai", "model": "count-model"}
    out = {r["instruction"]: r for r in Dataset(tmp_path / "limited").iter_rows()}
    assert all(out[r["instruction"]]["output"] == "re:" + r["instruction"] for r in rows)
    # per-request seeds derive from (run seed, record id, purpose), whichever worker sent them
    want = {r["instruction"]: derive_seed(11, r["id"], "echo") for r in rows}
    assert counting_server.seeds == want and len(set(want.values())) == len(want)

    # control: a plain callable factory gets no cluster limiter, so two workers
    # with a local concurrency of 3 each exceed it (the check above can fail)
    def unlimited():
        from pipeline.teacher import TeacherFactory
        return TeacherFactory(section, tmp_path, 11).build()
    _, peak = run(unlimited, "unlimited")
    assert peak > 3


def test_a_shared_budget_bounds_every_workers_requests(tmp_path, ray_, counting_server):
    """refresh's token budget on Ray: each worker's teacher draws on one ledger, so the cluster stops
    sending once it is spent (give or take one wave per worker), and every refused row says why."""
    from pipeline.teacher.budget import Budget

    ds, _ = ray_support.numbered_dataset(tmp_path / "in", 24, per_file=24)
    section = TeacherSection(backend="openai", base_url=counting_server.url, concurrency=2, cache=False)
    budget = Budget.on_ray(ray_, max_tokens=40)   # the server charges 8 tokens a request
    factory = TeacherFactory(section, tmp_path, 11, budget=budget)   # in waves of concurrency (2)
    ctx = RunContext(run_id="b", seed=11, teacher_factory=factory, progress=False)
    counting_server.reset()
    m = run_shards(ray_support.EchoStage(), ds, tmp_path / "out", ctx, shard_rows=6, executor="ray")
    sent = len(counting_server.seeds)
    assert m["ray_workers"] == 2 and 5 <= sent <= 5 + 2 * 2      # 40 tokens, plus at most a wave per worker
    state = budget.to_dict()
    assert state["tokens_sent"] == 8 * sent and state["exhausted_by"] == ["tokens"]
    assert budget.split == [5 * sent, 3 * sent]           # prompt, completion: the night's summary reads these
    assert state["requests_refused"] == 24 - sent == m["rows_rejected"] and m["rows_out"] == sent
    details = {r["drop_detail"] for r in Dataset(tmp_path / "out").rejected().iter_rows()}
    assert details == {"budget_exhausted"}
    # without the wrap the same stage sends every request (the check above can fail)
    counting_server.reset()
    run_shards(ray_support.EchoStage(), ds, tmp_path / "free", RunContext(
        run_id="b", seed=11, teacher_factory=TeacherFactory(section, tmp_path, 11), progress=False),
        shard_rows=6, executor="ray")
    assert len(counting_server.seeds) == 24
    budget.close()


@pytest.mark.skipif(not os.environ.get("DISTILL_VLLM_TEST_MODEL"),
                    reason="vLLM on Ray needs a GPU and a local model: set DISTILL_VLLM_TEST_MODEL=<model dir>")
def test_vllm_replicas_generate_on_ray(tmp_path, ray_):
    pytest.importorskip("vllm", reason="the vllm extra is not installed (GPU machines only)")
    if ray_.cluster_resources().get("GPU", 0) < 1:
        pytest.skip("the Ray cluster has no GPU")
    ds, rows = ray_support.numbered_dataset(tmp_path / "in", 8, per_file=8)
    section = TeacherSection(backend="vllm", model=os.environ["DISTILL_VLLM_TEST_MODEL"], cache=False,
                             vllm_args={"gpu_memory_utilization": 0.5, "max_model_len": 1024})
    ctx = RunContext(run_id="r", seed=5, teacher_factory=TeacherFactory(section, tmp_path, 5), progress=False)
    m = run_shards(ray_support.EchoStage(max_tokens=16), ds, tmp_path / "out", ctx, shard_rows=4, executor="ray")
    assert m["rows_out"] == 8 and m["teacher"]["backend"] == "vllm"
    first = {r["id"]: r["output"] for r in Dataset(tmp_path / "out").iter_rows()}
    run_shards(ray_support.EchoStage(max_tokens=16), ds, tmp_path / "again", ctx, shard_rows=4, executor="ray")
    assert {r["id"]: r["output"] for r in Dataset(tmp_path / "again").iter_rows()} == first  # seeds reproduce


@pytest.mark.teacher
def test_orca_on_ray_against_the_embedded_teacher(tmp_path, ray_, openai_teacher_config):
    """Ray workers answer through the real server and fill the shared response cache;
    the local executor then reproduces the same dataset from that cache alone."""
    from pipeline.records import new_row
    from pipeline.stages.orca import OrcaConfig, run_orca
    from pipeline.store import DatasetWriter

    tasks = [("Name the capital of France.", ""), ("Is 7 a prime number? Answer yes or no.", ""),
             ("Classify the sentiment: 'I loved this film.'", ""), ("Give one synonym of 'quick'.", "")]
    w = DatasetWriter(tmp_path / "in", "import")
    w.write_shard(0, [new_row(i, x, "", origin="import") for i, x in tasks])
    w.write_manifest()
    section = openai_teacher_config.model_copy(update={"cache": True, "concurrency": 2})
    cfg = OrcaConfig(max_tokens=32, truncated="keep", drop_refusals=False, retry_truncated=False)

    def ctx():
        return RunContext(run_id="o", seed=3, teacher_factory=TeacherFactory(section, tmp_path, 3), progress=False)

    c = ctx()
    m = run_orca(tmp_path / "in", tmp_path / "ray", c, cfg, shard_rows=2, executor="ray")
    c.close()
    assert m["rows_out"] + m["rows_rejected"] == 4 and m["executor"] == "ray"
    assert m["totals"]["teacher_requests"] == 4 and m["totals"]["teacher_cache_hits"] == 0
    c = ctx()
    local = run_orca(tmp_path / "in", tmp_path / "local", c, cfg, shard_rows=2)
    c.close()
    assert local["totals"]["teacher_cache_hits"] == 4  # every answer came from the workers' cache
    a = Dataset(tmp_path / "ray").read()
    b = Dataset(tmp_path / "local").read()
    assert a.num_rows == b.num_rows == m["rows_out"]
    # the same rows, answers and choices; only the time and the `cached` flag differ
    assert a.drop_columns(["created_at", "meta"]).equals(b.drop_columns(["created_at", "meta"]))
    for x, y in zip(a.column("meta").to_pylist(), b.column("meta").to_pylist()):
        x, y = json.loads(x), json.loads(y)
        assert (x["orca"].pop("cached"), y["orca"].pop("cached")) == (False, True) and x == y


@pytest.mark.teacher
def test_evol_instruct_on_ray_against_the_embedded_teacher(tmp_path, ray_, openai_teacher_config):
    """Evol-Instruct's rounds with their shards on Ray workers, through the real server: the same
    rounds, pools and output as the local executor, which then needs no teacher call (cache)."""
    from pipeline.records import new_row
    from pipeline.stages.evol_instruct import EvolConfig, run_evol_instruct
    from pipeline.stages.evol_instruct.stage import pool_dir, round_dir
    from pipeline.store import DatasetWriter

    tasks = ["Name the capital of France.", "Give one synonym of 'quick'.", "Describe a cat in one sentence.",
             "List two primary colours.", "Say hello in Spanish."]
    w = DatasetWriter(tmp_path / "in", "import")
    w.write_shard(0, [new_row(t, "", "", origin="import") for t in tasks])
    w.write_manifest()
    section = openai_teacher_config.model_copy(update={"cache": True, "concurrency": 2})
    cfg = EvolConfig(rounds=2, evolve_max_tokens=48, answer_max_tokens=24, judge_max_tokens=4,
                     drop_truncated_answers=False)

    def run(out, executor):
        c = RunContext(run_id="e", seed=5, teacher_factory=TeacherFactory(section, tmp_path, 5), progress=False,
                         executor=executor)
        try:
            m = run_evol_instruct(tmp_path / "in", tmp_path / out, c, cfg, shard_rows=2)
            return m, (c.teacher.stats.to_dict() if executor == "local" else None)
        finally:
            c.close()

    m, _ = run("ray", "ray")
    rm = json.loads((round_dir(tmp_path / "ray", 1) / "_manifest.json").read_text())
    assert rm["executor"] == "ray" and rm["shards"] == 3 and m["rounds_done"] == 2
    assert m["totals"]["teacher_requests"] > 0
    local, stats = run("local", "local")
    assert stats["requests"] > 0 and stats["sent"] == 0 and stats["cache_hits"] == stats["requests"]
    assert m["per_round"] and [
        {k: v for k, v in p.items() if k not in ("seconds", "teacher_seconds")} for p in m["per_round"]] == [
        {k: v for k, v in p.items() if k not in ("seconds", "teacher_seconds")} for p in local["per_round"]]
    for part in (lambda d: d, lambda d: round_dir(d, 1), lambda d: pool_dir(d, 1), lambda d: pool_dir(d, 2)):
        a, b = Dataset(part(tmp_path / "ray")).read(), Dataset(part(tmp_path / "local")).read()
        assert a.drop_columns(["created_at"]).equals(b.drop_columns(["created_at"]))


def test_score_with_a_separate_judge_teacher_on_ray_equals_local(tmp_path, ray_, counting_server):
    """[score.judge_teacher] on Ray: workers build their own judge (a live teacher does not
    travel), share one cluster-wide limit, and judge exactly as the local executor does."""
    from pipeline.stages.score import ScoreConfig, run_score
    from pipeline.teacher.ping import PING_PROMPT

    ray_support.numbered_dataset(tmp_path / "in", 16, per_file=16)
    judge = TeacherSection(backend="openai", base_url=counting_server.url, concurrency=2, cache=False)
    cfg = ScoreConfig(judge="teacher", judge_teacher=judge)

    def run(executor, out):
        counting_server.reset()
        ctx = RunContext(run_id="s", seed=4, workdir=tmp_path, executor=executor, progress=False)
        m = run_score(tmp_path / "in", tmp_path / out, cfg, ctx, shard_rows=4)
        # the judge's ping before work is not a judgment
        return m, counting_server.max_in_flight, {k: v for k, v in counting_server.seeds.items() if k != PING_PROMPT}

    local, _, local_seeds = run("local", "local")
    m, peak, seeds = run("ray", "ray")
    assert m["executor"] == "ray" and m["ray_workers"] == 2
    assert m["judge_teacher"] == local["judge_teacher"] == {
        j: {"backend": "openai", "model": "count-model"} for j in ("quality", "complexity")}  # one per score
    assert seeds == local_seeds and len(seeds) == 2 * 16  # quality and complexity of every row, same seeds
    assert peak <= 2, f"{peak} judge requests in flight with a cluster-wide concurrency of 2"
    assert {k: v for k, v in m["totals"].items() if k != "seconds"} == \
        {k: v for k, v in local["totals"].items() if k != "seconds"}
    a, b = Dataset(tmp_path / "ray").read(), Dataset(tmp_path / "local").read()
    assert a.num_rows == 16 and a.equals(b)  # scores, flags and every judgment in meta
