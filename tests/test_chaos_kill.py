"""kill -9 at seeded random moments of `distill import`, `orca`, `minhash` and `score`, then a rerun.

The trials are scripts/chaos_kill.py's (the closing note runs more of them): each
command runs once unkilled as the reference; a trial kills it twice (SIGKILL to
its process group, after a delay drawn from a seeded RNG over the reference's
wall time), checks that every visible shard is whole after each kill, and
reruns it to completion. The finished folder must hold exactly the reference's
rows, kept and rejected, by id and content, none twice, no temporary left.
Orca asks a loopback OpenAI-compatible server that counts requests by their
whole body: a body asked twice is a request paid twice, allowed only for the
requests in flight at a kill (the teacher concurrency).
"""

from __future__ import annotations

import pytest
from proc_support import load_script

chaos_kill = load_script("chaos_kill")
TRIALS = 2


@pytest.fixture(scope="module")
def chaos(tmp_path_factory):
    return chaos_kill.Chaos(tmp_path_factory.mktemp("chaos"), seed=17, rows=chaos_kill.CI_ROWS)


@pytest.fixture(scope="module")
def orca_trials(chaos):
    return [chaos.trial("orca", i, kills=2) for i in range(TRIALS)]


def _assert_exact(trials) -> None:
    for t in trials:
        assert t.error is None, t.line()
        assert t.partial == [], t.line()
        assert (t.lost, t.duplicated, t.changed) == (0, 0, 0), t.line()
    assert sum(t.kills for t in trials) >= 1, [t.line() for t in trials]  # the kills found the command running


@pytest.mark.parametrize("command", ["import", "minhash", "score"])
def test_killed_then_rerun_holds_exactly_the_reference_rows(chaos, command):
    _assert_exact([chaos.trial(command, i, kills=2) for i in range(TRIALS)])


def test_orca_killed_then_rerun_holds_exactly_the_reference_rows(orca_trials):
    _assert_exact(orca_trials)


def test_orca_rerun_repeats_at_most_the_requests_in_flight_at_each_kill(orca_trials):
    """Needs the response cache to commit each answer before it is used (issue 17, item 6; helper A's
    part): while the cache commits in batches, a kill repeats every answer of the batch it lost."""
    for t in orca_trials:
        assert t.repeated <= t.kills * chaos_kill.CONCURRENCY, t.line()


def test_a_resumed_minhash_removes_the_signature_temporary_a_killed_run_left(tmp_path):
    """Found by the trials: a kill while a block's signatures were written left `_minhash/.part-*.tmp-*`
    behind the finished rerun."""
    from pipeline import records
    from pipeline.stages.minhash import MinhashConfig, run_minhash
    from pipeline.store import DatasetWriter

    src, out = tmp_path / "in", tmp_path / "out"
    w = DatasetWriter(src, "seed")
    w.write_shard(0, [records.new_row(f"task {i} about something else entirely", origin="seed") for i in range(30)])
    w.write_manifest()
    cfg = MinhashConfig(shard_rows=10, workers=1)
    run_minhash(src, out, cfg, progress=False)
    (out / "_manifest.json").unlink()  # as if killed before its last write
    left = out / "_minhash" / ".part-00001.sig.npy.tmp-4242-deadbeef"
    left.write_bytes(b"half a signature file")
    run_minhash(src, out, cfg, progress=False)
    assert (out / "_manifest.json").exists() and not left.exists()


def test_a_kill_while_a_fresh_writer_forgets_the_old_shards_leaves_no_marker_without_its_shard(tmp_path, monkeypatch):
    """Found by the trials: a re-import killed while it removed the old shards left their done markers."""
    import pipeline.store as store
    from pipeline import records

    out = tmp_path / "out"
    w = store.DatasetWriter(out, "import")
    for i in range(5):
        w.write_shard(i, [records.new_row(f"task {i}", origin="import")])
    w.write_manifest()
    deleted, real = [], store.Location.delete

    def delete(self):  # the process dies after three files are gone
        if len(deleted) == 3:
            raise KeyboardInterrupt
        deleted.append(self.path)
        return real(self)
    monkeypatch.setattr(store.Location, "delete", delete)
    with pytest.raises(KeyboardInterrupt):
        store.DatasetWriter(out, "import", fresh=True)
    monkeypatch.undo()
    marked = {m.stem for m in (out / "_done").glob("part-*.json")}
    assert marked <= {p.stem for p in out.glob("part-*.parquet")}, sorted(marked)
    assert not (out / "_manifest.json").exists()
