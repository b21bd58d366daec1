import errno
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import records, store
from pipeline.store import Dataset, DatasetError, DatasetWriter, StoreWriteError

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(text, text, st.one_of(text, text.map(lambda s: (s or "\u00e9\U0001F600") * 5000))), max_size=12))
def test_round_trip_arbitrary_text(tmp_path_factory, rows):
    out = tmp_path_factory.mktemp("ds")
    rs = [records.new_row(i, inp, o, origin="seed", run_id="r") for i, inp, o in rows]
    w = DatasetWriter(out, "test")
    w.write_shard(0, rs[:5])
    w.write_shard(1, rs[5:])
    w.write_manifest()
    back = list(Dataset(out, require_complete=True).iter_rows())
    assert [(r["instruction"], r["input"], r["output"]) for r in back] == [(i, inp, o) for i, inp, o in rows]
    assert [r["id"] for r in back] == [r["id"] for r in rs]


def _rows(n, prefix="task"):
    return [records.new_row(f"{prefix} number {i}", "", f"answer {i}", origin="seed") for i in range(n)]


def test_manifest_written_last_with_merged_stats(tmp_path):
    w = DatasetWriter(tmp_path / "d", "demo")
    bad = [records.rejected_row(r, "demo", "too_short", "3 words") for r in _rows(2, "bad")]
    w.write_shard(0, _rows(3), bad, {"rows_in": 5, "teacher_prompt_tokens": 10})
    assert not Dataset(tmp_path / "d").complete
    w.write_shard(1, _rows(2, "more"), [], {"rows_in": 2, "teacher_prompt_tokens": 4})
    m = w.write_manifest(run_id="r1")
    assert (m["rows_in"], m["rows_out"], m["rows_rejected"]) == (7, 5, 2)
    assert m["drops"] == {"too_short": 2} and m["totals"]["teacher_prompt_tokens"] == 14
    ds = Dataset(tmp_path / "d", require_complete=True)
    assert ds.num_rows() == 5 and ds.rejected().num_rows() == 2
    assert ds.drop_counts() == {"demo:too_short": 2}
    assert json.loads((tmp_path / "d" / "_manifest.json").read_text())["run_id"] == "r1"


def test_rejected_rows_need_a_reason(tmp_path):
    w = DatasetWriter(tmp_path, "demo")
    row = dict(_rows(1)[0], drop_stage="demo", drop_reason=None)
    with pytest.raises(ValueError, match="without a drop_reason"):
        w.write_shard(0, [], [row])


def test_failed_write_leaves_nothing_visible(tmp_path, monkeypatch):
    w = DatasetWriter(tmp_path, "demo")

    def boom(table, where, **kw):
        with open(where, "wb") as f:
            f.write(b"PAR1 half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(StoreWriteError, match="disk full"):
        w.write_shard(0, _rows(3))
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("_") and p.name != ".lock"] == []
    assert not w.is_done(0)


def test_leftover_temporaries_are_cleaned_and_invisible(tmp_path):
    w = DatasetWriter(tmp_path, "demo")
    w.write_shard(0, _rows(2))
    (tmp_path / ".part-00001.parquet.tmp-123-abc").write_bytes(b"partial")
    assert len(Dataset(tmp_path).shards) == 1
    DatasetWriter(tmp_path, "demo")
    assert not (tmp_path / ".part-00001.parquet.tmp-123-abc").exists()


def test_resume_with_other_settings_is_refused(tmp_path):
    DatasetWriter(tmp_path, "demo", plan={"shard_rows": 10})
    with pytest.raises(DatasetError, match="shard_rows: 10 -> 20"):
        DatasetWriter(tmp_path, "demo", plan={"shard_rows": 20})


def test_not_a_dataset_and_wrong_schema(tmp_path):
    with pytest.raises(DatasetError, match="no such dataset folder"):
        Dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="not a dataset folder"):
        Dataset(tmp_path / "empty")
    (tmp_path / "wrong").mkdir()
    pq.write_table(pa.table({"id": ["1"], "text": ["x"]}), tmp_path / "wrong" / "part-00000.parquet")
    with pytest.raises(DatasetError, match=r"part-00000.parquet: wrong schema: missing column"):
        Dataset(tmp_path / "wrong")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "part-00000.parquet").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="unreadable Parquet shard"):
        Dataset(tmp_path / "corrupt")
    f = tmp_path / "file.json"
    f.write_text("[]")
    with pytest.raises(DatasetError, match="distill import"):
        Dataset(f)
    w = DatasetWriter(tmp_path / "partial", "demo")
    w.write_shard(0, _rows(1))
    with pytest.raises(DatasetError, match="unfinished `demo` output"):
        Dataset(tmp_path / "partial", require_complete=True)


def test_streaming_reader_yields_batches(tmp_path):
    w = DatasetWriter(tmp_path, "demo")
    for i in range(3):
        w.write_shard(i, _rows(50, f"s{i}"))
    batches = list(Dataset(tmp_path).iter_batches(columns=["id"], batch_size=20))
    assert sum(b.num_rows for b in batches) == 150 and max(b.num_rows for b in batches) == 20
    assert store.shard_name(7) == "part-00007.parquet"


LOCKED_BY_OTHER = """
import sys
from pipeline.errors import Locked
from pipeline.store import folder_lock
try:
    folder_lock(sys.argv[1]).acquire()
except Locked as e:
    print("locked:", e)
else:
    print("free")
"""


def _other_process_sees(folder) -> str:
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-c", LOCKED_BY_OTHER, str(folder)], capture_output=True,
                          text=True).stdout.strip()


def test_writer_lock_is_reentrant_in_process_and_exclusive_across_processes(tmp_path):
    import os
    first = DatasetWriter(tmp_path, "test")
    first.write_shard(0, _rows(2))
    second = DatasetWriter(tmp_path, "test")  # the same process again (a stage reopening its folder): no Locked
    second.write_shard(1, _rows(2, "b"))
    seen = _other_process_sees(tmp_path)
    assert seen.startswith("locked:") and f"pid {os.getpid()}" in seen
    second.write_manifest()  # releases this writer's hold; the first still holds the folder
    assert _other_process_sees(tmp_path).startswith("locked:")
    first.close()
    assert _other_process_sees(tmp_path) == "free"
    assert Dataset(tmp_path, require_complete=True).num_rows() == 4


def test_writer_refuses_another_stages_folder_foreign_files_and_its_own_input(tmp_path):
    w = DatasetWriter(tmp_path / "a", "score")
    w.write_shard(0, _rows(2))
    w.write_manifest()
    with pytest.raises(DatasetError, match="holds a finished `score` dataset.*--overwrite"):
        DatasetWriter(tmp_path / "a", "import")
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "notes.md").write_text("mine")
    with pytest.raises(DatasetError, match=r"did not write \(notes.md\)"):
        DatasetWriter(tmp_path / "user", "import")
    with pytest.raises(DatasetError, match="inside the output folder"):
        DatasetWriter(tmp_path / "a", "score", plan={"input": str(tmp_path / "a" / "part-00000.parquet")})
    assert Dataset(tmp_path / "a", require_complete=True).num_rows() == 2
    assert sorted(p.name for p in (tmp_path / "user").iterdir()) == ["notes.md"]


def test_clear_out_moves_everything_but_the_lock_aside(tmp_path):
    w = DatasetWriter(tmp_path / "a", "score")
    w.write_shard(0, _rows(2))
    w.write_manifest()
    kept = store.clear_out(tmp_path / "a")
    assert kept.parent == tmp_path / "a" / ".stale"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [".lock", ".stale"]
    assert Dataset(kept, require_complete=True).num_rows() == 2
    DatasetWriter(tmp_path / "a", "import").write_manifest()  # now empty: any stage may write it


def test_unmarked_shards_and_their_rejected_rows_are_not_data(tmp_path):
    w = DatasetWriter(tmp_path, "test")
    w.write_shard(0, _rows(3), [records.rejected_row(_rows(1, "r")[0], "test", "too_short", "")])
    w.write_manifest()
    staged = w.stage_shard(1, _rows(4, "late"), [records.rejected_row(_rows(1, "q")[0], "test", "too_long", "")])
    staged.kept.commit_to(w.loc.join("part-00001.parquet"))  # killed between the renames and the marker
    staged.rejected.commit_to(w.loc.join("rejected", "part-00001.parquet"))
    ds = Dataset(tmp_path)
    assert ds.num_rows() == 3 and ds.unmarked == ["part-00001.parquet"]
    assert ds.rejected().num_rows() == 1 and dict(ds.drop_counts()) == {"test:too_short": 1}


def test_corrupt_metadata_and_unfinished_inputs_are_one_line(tmp_path):
    w = DatasetWriter(tmp_path, "orca", plan={"input": "/data/evol"})
    w.write_shard(0, _rows(2))
    w.close()
    with pytest.raises(DatasetError, match=r"unfinished `orca` output .*distill orca /data/evol --out"):
        Dataset(tmp_path, require_complete=True)
    assert store.require_finished(tmp_path, allow_partial=True) == {
        "allow_partial": True, "input_shards_complete": 1, "input_rows_complete": 2}
    with store.allowing_partial(tmp_path):
        assert Dataset(tmp_path, require_complete=True).num_rows() == 2
    (tmp_path / "_done" / "part-00000.json").write_text("[1, 2")
    with pytest.raises(DatasetError, match=r"part-00000.json: corrupt .*delete it"):
        DatasetWriter(tmp_path, "orca", plan={"input": "/data/evol"})
    (tmp_path / "_plan.json").write_text("")
    with pytest.raises(DatasetError, match=r"_plan.json: corrupt"):
        DatasetWriter(tmp_path, "orca", plan={"input": "/data/evol"})


def test_a_full_disk_in_a_minhash_phase_file_is_one_line_and_leaves_no_temporary(tmp_path, monkeypatch):
    import numpy as np

    from pipeline.stages.minhash import blocks

    def full(table, f, **kw):
        f.write(b"\0" * 1024)
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(blocks.pq, "write_table", full)
        with pytest.raises(StoreWriteError, match="disk full"):
            blocks.save_table(tmp_path / "cand-00000.parquet", pa.table({"a": [1]}))
    assert list(tmp_path.iterdir()) == []
    blocks.save_npy(tmp_path / "ok.npy", np.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ok.npy"]
