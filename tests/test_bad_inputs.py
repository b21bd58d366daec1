"""The bad-input corpus (tests/bad_input_corpus.py) through the real CLI: each case's exit code and first line,
never a traceback; some cases also check what was (not) written."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from bad_input_corpus import CASES, GOOD, run_case, run_cli, verify

from pipeline.embeddings.cache import EmbeddingCache
from pipeline.embeddings.embedder import Embedder
from pipeline.errors import StoreWriteError
from pipeline.store import explain_os_error


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.slow else []) for c in CASES])
def test_bad_input(case, tmp_path):
    reason = case.needs() if case.needs else None
    if reason:
        pytest.skip(reason)
    res = run_case(case, tmp_path)
    problems = verify(case, tmp_path, res)
    assert not problems, "\n".join(problems)


def _one_row(tmp_path):
    src = tmp_path / "rows.jsonl"
    src.write_text(json.dumps(GOOD) + "\n")
    return src


def test_debug_shows_the_traceback_of_a_mapped_os_error(tmp_path):
    (tmp_path / "f").write_text("a file where a folder should be")
    args = ["import", str(_one_row(tmp_path)), "--workdir", str(tmp_path / "f" / "w")]
    plain = run_cli(args)
    assert plain.code == 5 and plain.first_line.startswith("error: ") and not plain.traceback
    debug = run_cli(["--debug", *args])
    assert "NotADirectoryError" in debug.traceback


@pytest.mark.parametrize("exc, code, first", [
    (RecursionError("maximum recursion depth exceeded"), 3, "nested too deeply"),
    (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), 3, "not valid UTF-8"),
    (PermissionError(13, "Permission denied", "/some/where"), 5, "/some/where: cannot write here"),
    (OSError(28, "No space left on device", "/full/disk/x"), 5, "/full/disk/x: disk full"),
])
def test_top_level_handler_turns_machine_and_data_errors_into_one_line(tmp_path, monkeypatch, exc, code, first):
    from pipeline.commands import dataset_cmds

    def fail(*a, **k):
        raise exc
    monkeypatch.setattr(dataset_cmds, "import_file", fail)
    args = ["import", str(_one_row(tmp_path)), "--workdir", str(tmp_path / "w")]
    res = run_cli(args)
    assert (res.code, res.traceback) == (code, ""), res.err
    assert first in res.first_line and res.one_line
    assert type(exc).__name__ in run_cli(["--debug", *args]).traceback


def test_a_bug_still_shows_its_traceback(tmp_path, monkeypatch):
    from pipeline.commands import dataset_cmds

    def bug(*a, **k):
        return {}["missing"]
    monkeypatch.setattr(dataset_cmds, "import_file", bug)
    res = run_cli(["import", str(_one_row(tmp_path)), "--workdir", str(tmp_path / "w")])
    assert res.code == 1 and "KeyError" in res.traceback
    errno_less = OSError("pyarrow-style error without an errno")
    monkeypatch.setattr(dataset_cmds, "import_file", lambda *a, **k: (_ for _ in ()).throw(errno_less))
    assert "pyarrow-style" in run_cli(["import", str(_one_row(tmp_path)), "--workdir", str(tmp_path / "w")]).traceback


def _distill(*args):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True)


def test_the_installed_entry_point_gives_one_line(tmp_path):
    """Two cases through a real process: what cron sees on stderr and as the exit status."""
    bad = tmp_path / "x.parquet"
    bad.write_text("not parquet")
    res = _distill("import", str(bad), "--workdir", str(tmp_path / "w"))
    assert res.returncode == 3 and res.stderr.count("\n") == 1, res.stderr
    assert "x.parquet: not a readable Parquet file" in res.stderr
    res = _distill("import", str(_one_row(tmp_path)), "--workdir", str(tmp_path / "a" / "w"), "--run-id", "../../x")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "run id '../../x'" in res.stderr, res.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "a").exists()


class _HashEmbedder(Embedder):
    name, dim = "hash-test", 8

    def _encode(self, texts):
        return np.stack([np.random.default_rng(abs(hash(t)) % 2**32).standard_normal(self.dim) for t in texts])


def test_embedding_cache_on_a_full_disk_leaves_no_orphan_segment(tmp_path, monkeypatch):
    """The keys file commits a segment; when it cannot be written, its vectors file goes too (it holds space)."""
    from pipeline.embeddings import cache as cache_mod

    real = cache_mod.atomic_write_npy

    def full_for_keys(path, array):
        if path.name.endswith(".keys.npy"):
            raise explain_os_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), path)
        real(path, array)
    monkeypatch.setattr(cache_mod, "atomic_write_npy", full_for_keys)
    cache = EmbeddingCache(tmp_path, _HashEmbedder())
    with pytest.raises(StoreWriteError, match="disk full"):
        cache.encode(["one text", "another text"])
    assert list(cache.dir.iterdir()) == []
    monkeypatch.setattr(cache_mod, "atomic_write_npy", real)
    assert EmbeddingCache(tmp_path, _HashEmbedder()).encode(["one text"]).shape == (1, 8)


def test_a_json_file_too_big_for_memory_is_one_line(tmp_path, monkeypatch):
    from pipeline import importer

    def no_memory(*a, **k):
        raise MemoryError
    monkeypatch.setattr(importer, "json", SimpleNamespace(loads=no_memory, dumps=json.dumps,
                                                          JSONDecodeError=json.JSONDecodeError))
    src = tmp_path / "big.json"
    src.write_text(json.dumps([GOOD]))
    res = run_cli(["import", str(src), "--workdir", str(tmp_path / "w")])
    assert res.code == 3 and "too big to load as one JSON document; write it as JSONL" in res.first_line, res.err
