import pytest

from pipeline import records
from pipeline.context import RunContext
from pipeline.runner import ShardResult, run_shards
from pipeline.store import Dataset, DatasetWriter


def _input(tmp_path, n=25, shard=7):
    w = DatasetWriter(tmp_path / "in", "seed")
    rows = [records.new_row(f"task {i} with words", "", f"out {i}", origin="seed") for i in range(n)]
    for k in range(0, n, shard):
        w.write_shard(k // shard, rows[k:k + shard])
    w.write_manifest()
    return Dataset(tmp_path / "in", require_complete=True), rows


class LengthFilter:
    """Keeps rows whose number is even; fails once on a chosen shard to simulate a crash."""

    name = "lenfilter"

    def __init__(self, crash_on=None):
        self.crash_on = crash_on
        self.calls = []

    def settings(self):
        return {"rule": "even"}

    def process(self, rows, ctx):
        first = rows[0]["instruction"]
        self.calls.append(first)
        if self.crash_on is not None and first == self.crash_on:
            raise RuntimeError("simulated crash")
        kept, rej = [], []
        for r in rows:
            n = int(r["instruction"].split()[1])
            if n % 2 == 0:
                kept.append(r)
            else:
                rej.append(records.rejected_row(r, self.name, "odd_number", f"n={n}"))
        return ShardResult(kept, rej, {"odd_seen": len(rej)})


def test_shards_are_fixed_slices_of_the_input(tmp_path):
    ds, rows = _input(tmp_path)
    shards = list(ds.iter_shards(10))
    assert [i for i, _ in shards] == [0, 1, 2] and [len(s) for _, s in shards] == [10, 10, 5]
    assert [r["id"] for _, s in shards for r in s] == [r["id"] for r in rows]
    assert sum(len(s) for _, s in ds.iter_shards(10, limit=12)) == 12


def test_resume_redoes_only_unfinished_shards(tmp_path):
    ds, rows = _input(tmp_path)
    ctx = RunContext(run_id="r", progress=False)
    crashing = LengthFilter(crash_on="task 20 with words")
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_shards(crashing, ds, tmp_path / "out", ctx, shard_rows=10)
    assert not Dataset(tmp_path / "out").complete
    again = LengthFilter()
    m = run_shards(again, ds, tmp_path / "out", ctx, shard_rows=10)
    assert again.calls == ["task 20 with words"]  # shards 0 and 1 were done
    assert m["shards_skipped_on_resume"] == 2
    assert (m["rows_in"], m["rows_out"], m["rows_rejected"]) == (25, 13, 12)
    assert m["drops"] == {"odd_number": 12} and m["totals"]["odd_seen"] == 12
    out = Dataset(tmp_path / "out", require_complete=True)
    assert sorted(r["id"] for r in out.iter_rows()) == sorted(r["id"] for r in rows[::2])
    assert {r["drop_reason"] for r in out.rejected().iter_rows()} == {"odd_number"}


def test_rerun_with_other_shard_size_is_refused(tmp_path):
    from pipeline.store import DatasetError
    ds, _ = _input(tmp_path)
    ctx = RunContext(run_id="r", progress=False)
    run_shards(LengthFilter(), ds, tmp_path / "out", ctx, shard_rows=10)
    with pytest.raises(DatasetError, match="shard_rows"):
        run_shards(LengthFilter(), ds, tmp_path / "out", ctx, shard_rows=5)


def test_context_rng_is_per_record_and_purpose():
    ctx = RunContext(run_id="r", seed=3)
    a = ctx.rng("id1", "op").random()
    assert a == RunContext(run_id="other", seed=3).rng("id1", "op").random()
    assert a != ctx.rng("id2", "op").random() and a != ctx.rng("id1", "other").random()
    assert a != RunContext(run_id="r", seed=4).rng("id1", "op").random()


def test_missing_teacher_is_a_clear_error():
    with pytest.raises(RuntimeError, match="needs a teacher"):
        RunContext(run_id="r").teacher
