"""Evol-Instruct killed with SIGKILL mid-round, then rerun: it continues, and pays for nothing twice."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from evol_support import make_input, responder

from pipeline.context import RunContext
from pipeline.stages.evol_instruct import EvolConfig, run_evol_instruct
from pipeline.stages.evol_instruct.stage import round_dir
from pipeline.store import Dataset
from pipeline.teacher.cache import CachedTeacher, ResponseCache
from pipeline.teacher.fake import FakeTeacher

TESTS = Path(__file__).resolve().parent
INSTRUCTIONS = [f"Plan a trip number {i}." for i in range(5)] + ["Name a river [leak].", "Cook rice [equal]."]
CFG = dict(rounds=2)
SHARD_ROWS = 2
SEED = 11

CHILD = textwrap.dedent("""
    import json, os, signal, sys
    sys.path.insert(0, {tests!r})
    from evol_support import responder
    from pipeline.context import RunContext
    from pipeline.stages.evol_instruct import EvolConfig, run_evol_instruct
    from pipeline.teacher.cache import CachedTeacher, ResponseCache
    from pipeline.teacher.fake import FakeTeacher

    class KilledOnCall(FakeTeacher):
        calls = 0
        def chat(self, requests, on_done=None):
            self.calls += 1
            if self.calls == {kill_at}:
                os.kill(os.getpid(), signal.SIGKILL)   # no cleanup, no flush: a real kill
            out = super().chat(requests, on_done)
            with open({log!r}, "a") as f:
                for r in requests:
                    f.write(json.dumps([r.record_id, r.purpose]) + "\\n")
            return out

    teacher = CachedTeacher(KilledOnCall(responder), ResponseCache({cache!r}), {seed})
    ctx = RunContext(run_id="r", seed={seed}, teacher_factory=lambda: teacher, progress=False)
    run_evol_instruct({src!r}, {out!r}, ctx, EvolConfig(**{cfg!r}), shard_rows={shard_rows})
""")


def run_inprocess(src, out, cache):
    inner = FakeTeacher(responder)
    teacher = CachedTeacher(inner, ResponseCache(cache), SEED)
    ctx = RunContext(run_id="r", seed=SEED, teacher_factory=lambda: teacher, progress=False)
    try:
        m = run_evol_instruct(src, out, ctx, EvolConfig(**CFG), shard_rows=SHARD_ROWS)
    finally:
        ctx.close()
    return m, inner


def snapshot(out):
    ds = Dataset(out, require_complete=True)
    kept = sorted((r["id"], r["parent_id"], r["round"], r["output"]) for r in ds.iter_rows())
    rej = sorted((r["id"], r["drop_reason"]) for r in ds.rejected().iter_rows())
    return kept, rej


def test_sigkill_mid_round_then_rerun_repeats_no_teacher_call(tmp_path):
    src = make_input(tmp_path / "in", INSTRUCTIONS)
    out, cache, log = tmp_path / "out", tmp_path / "cache.sqlite", tmp_path / "calls.jsonl"
    # Round 1 has 4 shards (2+2+2+1 rows), three chat() calls each. Call 5 is the
    # judge call of shard 1: shard 0 is done, shard 1's evolutions were answered.
    script = CHILD.format(tests=str(TESTS), kill_at=5, log=str(log), cache=str(cache), seed=SEED,
                          src=str(src), out=str(out), cfg=CFG, shard_rows=SHARD_ROWS)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    answered = [tuple(json.loads(line)) for line in log.read_text().splitlines()]
    assert len(answered) == 2 + 2 + 2 + 2          # shard 0: evolve, judge, answer; shard 1: evolve
    # What the kill left: shard 0 of round 1 finished, nothing else visible, no manifest.
    assert (round_dir(out, 1) / "_done" / "part-00000.json").exists()
    assert not (round_dir(out, 1) / "_done" / "part-00001.json").exists()
    assert not (round_dir(out, 1) / "part-00001.parquet").exists()
    assert not (out / "_manifest.json").exists()

    m, inner = run_inprocess(src, out, cache)
    again = {(q.record_id, q.purpose) for q in inner.seen}
    assert not again & set(answered), "a request answered before the kill was sent again"
    assert m["rounds_done"] == 2

    # Same rows and drops as a run that was never interrupted.
    ref_out = tmp_path / "ref"
    ref_m, ref_inner = run_inprocess(src, ref_out, tmp_path / "ref-cache.sqlite")
    assert snapshot(out) == snapshot(ref_out)
    assert m["drops"] == ref_m["drops"] == {"prompt_leakage": 2, "judged_equal": 2}
    # Together the two runs asked the teacher exactly what the uninterrupted run asked.
    assert len(answered) + len(inner.seen) == len(ref_inner.seen)


def test_rerun_of_a_finished_stage_asks_nothing_and_rewrites_the_same_output(tmp_path):
    src = make_input(tmp_path / "in", INSTRUCTIONS)
    out = tmp_path / "out"
    m1, first = run_inprocess(src, out, tmp_path / "c1.sqlite")
    before = snapshot(out)
    # A fresh, empty cache: only the done markers can prevent calls here.
    m2, second = run_inprocess(src, out, tmp_path / "c2.sqlite")
    assert second.seen == [] and snapshot(out) == before
    assert m2["evolutions_accepted"] == m1["evolutions_accepted"]
    # More rounds on the same output folder: only the new round is evolved.
    inner = FakeTeacher(responder)
    ctx = RunContext(run_id="r", seed=SEED, teacher_factory=lambda: inner, progress=False)
    m3 = run_evol_instruct(src, out, ctx, EvolConfig(rounds=3), shard_rows=SHARD_ROWS)
    assert m3["rounds_done"] == 3 and {q.purpose.rsplit("=", 1)[-1] for q in inner.seen
                                       if q.purpose.startswith("evol:evolve")} == {"3"}
    assert m3["evolutions_accepted"] > m1["evolutions_accepted"]


def test_changed_settings_on_resume_are_refused(tmp_path):
    import pytest

    from pipeline.store import DatasetError
    src = make_input(tmp_path / "in", INSTRUCTIONS)
    run_inprocess(src, tmp_path / "out", tmp_path / "c.sqlite")
    ctx = RunContext(run_id="r", seed=SEED, teacher_factory=lambda: FakeTeacher(responder), progress=False)
    with pytest.raises(DatasetError, match="different settings"):
        run_evol_instruct(src, tmp_path / "out", ctx, EvolConfig(rounds=2, top_p=0.9), shard_rows=SHARD_ROWS)
