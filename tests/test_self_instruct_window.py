"""The window schedule against a real HTTP teacher (tests/self_instruct_server.py over loopback):
replies filtered in request order whatever their timing, the window full, the paper's batches kept as a mode,
and a run stopped mid-way resumed to the same set.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from self_instruct_server import MODEL, StandIn

from pipeline import records
from pipeline.config import TeacherSection
from pipeline.context import RunContext
from pipeline.errors import TeacherUnavailable
from pipeline.stages.self_instruct import SelfInstructConfig, run_self_instruct
from pipeline.store import Dataset
from pipeline.teacher.base import TeacherLayer
from pipeline.teacher.factory import TeacherFactory


def context(server: StandIn, workdir: Path, *, concurrency: int = 64, cache: bool = True, wrap=None) -> RunContext:
    sec = TeacherSection(backend="openai", base_url=server.base_url, model=MODEL, concurrency=concurrency,
                         cache=cache, cache_path=str(workdir / "cache.sqlite"))

    def build():
        teacher = TeacherFactory(sec, workdir, 0).build()
        return wrap(teacher) if wrap is not None else teacher
    return RunContext(run_id="w", seed=3, workdir=workdir, teacher_factory=build, progress=False)


def run(server: StandIn, tmp: Path, name: str, cfg: SelfInstructConfig, **kw) -> dict:
    ctx = context(server, tmp / f"wd-{name}", **kw)
    try:
        return run_self_instruct(tmp / name, ctx, cfg)
    finally:
        ctx.close()


def pool(path: Path) -> list[str]:
    """The accepted instructions in pool order (kept rows and tasks rejected for their instances alike)."""
    found: dict[int, str] = {}
    ds = Dataset(path)
    for part in (ds, ds.rejected()):
        for r in part.iter_rows() if part is not None else ():
            m = records.get_meta(r, "self_instruct")
            if m.get("pool_index") is not None:
                found.setdefault(m["pool_index"], r["instruction"])
    return [found[i] for i in sorted(found)]


def key(r: dict) -> tuple:
    return r["instruction"], r["input"], r["output"], r.get("drop_reason")


def everything(path: Path) -> list[tuple]:
    ds = Dataset(path)
    rej = ds.rejected()
    return [key(r) for r in ds.iter_rows()] + sorted(key(r) for r in (rej.iter_rows() if rej is not None else ()))


def test_the_accepted_set_does_not_depend_on_reply_timing(tmp_path):
    """Same seed, replies in another order (other jitter): the same pool, rows and rejects, row for row."""
    cfg = SelfInstructConfig(num_instructions=200, window=8, shard_tasks=80)
    outs = []
    for jitter_seed in (1, 2):
        with StandIn(latency=0.01, jitter=0.2, jitter_seed=jitter_seed) as server:
            m = run(server, tmp_path, f"j{jitter_seed}", cfg, cache=False)
            outs.append((pool(tmp_path / f"j{jitter_seed}"), everything(tmp_path / f"j{jitter_seed}"), server.order,
                         set(server.asked)))
        assert m["stop_reason"] == "target_reached" and m["accepted_instructions"] == 200 and m["shards"] == 3
    (pool1, rows1, order1, asked1), (pool2, rows2, order2, asked2) = outs
    assert len(pool1) == 200 and pool1 == pool2 and rows1 == rows2
    common = [k for k in order1 if k in asked2]
    assert common != [k for k in order2 if k in asked1]   # the replies really came back in other orders


def test_the_window_keeps_many_requests_in_flight_and_mixes_the_steps(tmp_path):
    """16 requests out at once (counted at the server), instance requests among the bootstrap ones."""
    cfg = SelfInstructConfig(num_instructions=150, shard_tasks=40)
    with StandIn(latency=0.1) as server:
        m = run(server, tmp_path, "w", cfg, concurrency=16)
        stats = server.stats()
    assert m["schedule"] == "window" and m["window"] == 16 and m["peak_in_flight"] == 16
    assert stats["peak"] == 16 and stats["peak_by_kind"]["bootstrap"] > 5
    assert stats["mixed"] > 0   # bootstrap requests went out while classification / instance requests were out
    assert m["accepted_instructions"] == 150 and m["shards"] == 4


def test_the_paper_schedule_sends_five_at_a_time(tmp_path):
    cfg = SelfInstructConfig(num_instructions=40, shard_tasks=20, schedule="paper")
    with StandIn(latency=0.05) as server:
        m = run(server, tmp_path, "p", cfg, concurrency=64)
        stats = server.stats()
    assert stats["peak_by_kind"]["bootstrap"] == 5 and stats["mixed"] == 0
    assert m["schedule"] == "paper" and "window" not in m and m["accepted_instructions"] == 40


class FailsAfter(TeacherLayer):
    """Raises TeacherUnavailable (a tripped breaker) on the n-th chat() call and every one after."""

    def __init__(self, inner, n: int):
        super().__init__(inner)
        self.n, self.calls = n, 0

    def chat(self, requests, on_done=None):
        self.calls += 1
        if self.calls >= self.n:
            raise TeacherUnavailable("teacher failed 50 of the last 50 requests (scripted)")
        return self.inner.chat(requests, on_done=on_done)


def test_a_run_stopped_mid_way_resumes_to_the_same_set_repeating_at_most_the_window(tmp_path):
    cfg = SelfInstructConfig(num_instructions=80, window=8, shard_tasks=20)
    with StandIn(latency=0.01, jitter=0.05) as server:
        straight = run(server, tmp_path, "straight", cfg)
        server.reset()
        out = tmp_path / "stopped"
        wd = tmp_path / "wd-stopped"
        ctx = context(server, wd, wrap=lambda t: FailsAfter(t, 120))
        with pytest.raises(TeacherUnavailable, match="scripted"):
            run_self_instruct(out, ctx, cfg)
        ctx.close()
        done = len(list((out / "_done").glob("*.json")))
        assert 1 <= done < straight["shards"] and not (out / "_manifest.json").exists()
        first = list(server.asked)
        server.reset()
        ctx = context(server, wd)
        m = run_self_instruct(out, ctx, cfg)
        ctx.close()
        again = [k for k in server.asked if k in set(first)]
    assert len(again) <= 8          # only what was in flight is asked twice; the rest is in the cache
    assert m["accepted_instructions"] == straight["accepted_instructions"] == 80
    assert pool(out) == pool(tmp_path / "straight") and everything(out) == everything(tmp_path / "straight")
    assert m["totals"]["batches"] == straight["totals"]["batches"]


def test_a_teacher_whose_calls_cannot_overlap_gets_one_call_at_a_time_with_every_ready_request(tmp_path):
    """vLLM's in-process engine: never two chat() calls at once; each call carries what the window has ready."""
    import threading
    import time

    from self_instruct_support import world

    from pipeline.teacher.fake import FakeTeacher

    class Engine(FakeTeacher):
        backend = "vllm"

        def __init__(self):
            super().__init__(world)
            self.lock, self.running, self.most, self.sizes = threading.Lock(), 0, 0, []

        def chat(self, requests, on_done=None):
            with self.lock:
                self.running += 1
                self.most = max(self.most, self.running)
                self.sizes.append(len(requests))
            time.sleep(0.005)   # let another thread try to come in
            try:
                return super().chat(requests, on_done)
            finally:
                with self.lock:
                    self.running -= 1

    engine = Engine()
    ctx = RunContext(run_id="v", seed=0, teacher_factory=lambda: engine, progress=False)
    m = run_self_instruct(tmp_path / "out", ctx, SelfInstructConfig(num_instructions=30, window=8))
    assert m["accepted_instructions"] == 30 and engine.most == 1 and max(engine.sizes) == 8


def test_the_window_spreads_over_the_teachers_servers(tmp_path):
    """Two servers of one model (the embedded teacher's children): the window's single-request calls
    go to the least busy one, two in flight at each, not all four at the first."""
    from pipeline.teacher.openai_backend import OpenAIBackend
    with StandIn(latency=0.05) as a, StandIn(latency=0.05) as b:
        sec = TeacherSection(backend="openai", model=MODEL, concurrency=4, cache=False)
        backend = OpenAIBackend(sec, endpoints=[a.base_url, b.base_url])
        ctx = RunContext(run_id="e", seed=0, teacher_factory=lambda: backend, progress=False)
        try:
            m = run_self_instruct(tmp_path / "out", ctx, SelfInstructConfig(num_instructions=30))
        finally:
            ctx.close()
        assert m["window"] == 4 and m["accepted_instructions"] == 30
        assert (a.peak, b.peak) == (2, 2) and a.requests > 10 and b.requests > 10


def test_max_requests_counts_the_requests_out(tmp_path):
    """A window of 8 under max_requests = 4 sends 4 bootstrap requests, not a window's worth."""
    from self_instruct_support import make_ctx, world

    from pipeline.stages.self_instruct.seeds import load_seeds
    seeds = [t.instruction for t in load_seeds().tasks]

    def responder(req):   # only ever repeats seed tasks: nothing is novel
        return "9. " + "\n10. ".join(seeds[:3]) if req.purpose.endswith("bootstrap") else world(req)

    ctx, fake = make_ctx(responder)
    m = run_self_instruct(tmp_path / "out", ctx, SelfInstructConfig(num_instructions=5, window=8, max_requests=4))
    assert m["stop_reason"] == "max_requests" and len(fake.seen) == 4


def test_a_max_requests_stop_does_not_depend_on_reply_timing(tmp_path):
    cfg = SelfInstructConfig(num_instructions=1000, window=8, max_requests=90)
    got = []
    for jitter_seed in (1, 2):
        with StandIn(latency=0.01, jitter=0.2, jitter_seed=jitter_seed) as server:
            m = run(server, tmp_path, f"j{jitter_seed}", cfg, cache=False)
        assert m["stop_reason"] == "max_requests"
        got.append((pool(tmp_path / f"j{jitter_seed}"), everything(tmp_path / f"j{jitter_seed}"), m["totals"]["requests"]))
    assert got[0] == got[1] and 30 < len(got[0][0]) < 60
