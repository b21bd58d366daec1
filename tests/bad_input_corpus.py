"""The bad-input corpus: inputs, configs and machine states a user can cause, each with the exit code and
first output line `distill` must give (never a traceback).

Used by tests/test_bad_inputs.py (one test per case) and scripts/chaos_bad_inputs.py (the tally for the
issue's closing note). Each case builds its files under a fresh folder, runs the real CLI entry point
(`pipeline.cli.main`, so the top-level error handler is part of what is tested) in this process, and checks
the exit code, the first line, and, for some, what was or was not written.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import json
import os
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

GOOD = {"instruction": "Name three colours", "input": "", "output": "red, green, blue"}


@dataclass
class Result:
    code: int
    out: str
    err: str
    traceback: str = ""

    @property
    def first_line(self) -> str:
        """A failure's message: its first `error:` line (a stage's notes may come before it), or click's usage
        error; a success's first stdout line."""
        lines = [ln for ln in (self.err if self.code else self.out).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("error:")] if self.code else []
        return (errors or lines or [""])[0]

    @property
    def one_line(self) -> bool:
        """No traceback, and a failure said what went wrong once, last (click's usage errors keep their form)."""
        if self.traceback or "Traceback" in self.err:
            return False
        if self.code in (0, 2) and (self.code == 0 or self.err.startswith("Usage:")):
            return True
        lines = [ln for ln in self.err.splitlines() if ln.strip()]
        return bool(lines) and sum(ln.startswith("error:") for ln in lines) == 1 and lines[-1].startswith("error:")


@dataclass
class Case:
    id: str
    setup: Callable[[Path], list[str]]            # builds files under a folder; returns the CLI arguments
    code: int
    first: str                                    # a substring of the first output line
    check: Callable[[Path, Result], None] | None = None   # what must (not) have been written
    patch: Callable[[Path], contextlib.AbstractContextManager] | None = None  # a machine fault, in this process
    needs: Callable[[], str | None] | None = None  # a reason to skip on this machine, or None
    env: dict[str, str] = field(default_factory=dict)
    slow: bool = False                             # loads a model: seconds, not milliseconds


def run_cli(args: list[str], env: dict[str, str] | None = None) -> Result:
    """`distill ARGS` through pipeline.cli.main in this process: exit code, stdout, stderr, and any traceback
    that escaped (which a user would have seen)."""
    from pipeline import cli, logs

    out, err = io.StringIO(), io.StringIO()
    old_argv, old_env = sys.argv, {k: os.environ.get(k) for k in (env or {})}
    sys.argv = ["distill", *args]
    os.environ.update(env or {})
    code, tb = 0, ""
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main()
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:  # what a user would see as a traceback
                tb = traceback.format_exc()
                code = 1
    finally:
        sys.argv = old_argv
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        try:
            logs.configure_json(None)
        except Exception:  # closing the log file failed: a user would have seen this too
            tb += traceback.format_exc()
            code = code or 1
    return Result(code, out.getvalue(), err.getvalue() + tb, tb)


def run_case(case: Case, tmp: Path) -> Result:
    args = case.setup(tmp)
    with (case.patch(tmp) if case.patch else contextlib.nullcontext()):
        return run_cli(args, case.env)


def verify(case: Case, tmp: Path, res: Result) -> list[str]:
    """What is wrong with `res` for `case` (empty when it is right)."""
    problems = []
    if res.traceback or "Traceback" in res.err:
        problems.append("traceback:\n" + res.err[-3000:])
    if res.code != case.code:
        problems.append(f"exit {res.code}, expected {case.code}; output: {(res.err or res.out)[-800:]}")
    if case.first not in res.first_line:
        problems.append(f"first line {res.first_line!r} lacks {case.first!r}")
    if not res.one_line:
        problems.append(f"not one line: {res.err[-800:]!r}")
    if case.check is not None and not problems:
        try:
            case.check(tmp, res)
        except AssertionError as e:
            problems.append(f"check failed: {e}")
    return problems


# -- builders --------------------------------------------------------------------------------------------

def _jsonl(rows: list) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _import(name: str, content: str | bytes, *extra: str) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        p = tmp / name
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content, encoding="utf-8")
        return ["import", str(p), "--workdir", str(tmp / "w"), "--out", str(tmp / "out"), *extra]
    return setup


def _import_built(name: str, build: Callable[[Path], None], *extra: str) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        build(tmp / name)
        return ["import", str(tmp / name), "--workdir", str(tmp / "w"), "--out", str(tmp / "out"), *extra]
    return setup


def _good_parquet(p: Path, n: int = 50) -> None:
    pq.write_table(pa.table({"instruction": [f"Task number {i}" for i in range(n)],
                             "output": [f"answer {i}" for i in range(n)]}), p)


def corrupt_body(p: Path) -> None:
    """Overwrite a Parquet file's data pages, keeping its footer (metadata and schema still read fine)."""
    data = bytearray(p.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little")
    end = len(data) - 8 - footer
    data[4:end] = b"\xff" * (end - 4)
    p.write_bytes(bytes(data))


def _truncated_parquet(p: Path) -> None:
    _good_parquet(p)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _corrupt_parquet(p: Path) -> None:
    _good_parquet(p, 2000)
    corrupt_body(p)


def _record_parquet_wrong_types(p: Path) -> None:
    from pipeline import records
    pq.write_table(pa.table({n: ["Some text"] for n in records.COLUMN_NAMES}), p)


def _deep(n: int) -> str:
    return "[" * n + "]" * n


def _config(text: str | bytes, *cmd: str) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        p = tmp / "distill.toml"
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        if not cmd:
            return ["config", "show", "--config", str(p)]
        src = tmp / "rows.jsonl"
        src.write_text(_jsonl([GOOD]))
        return [*cmd, str(src), "--config", str(p), "--workdir", str(tmp / "a" / "w"), "--out", str(tmp / "out")]
    return setup


def _dataset(tmp: Path, n: int = 2000, shard_rows: int = 100) -> Path:
    """A finished dataset folder written by `distill import` (shards of shard_rows rows)."""
    src = tmp / "src.jsonl"
    src.write_text(_jsonl([{"instruction": f"Task {i}: {'word ' * (i % 7)}", "output": f"a{i}"} for i in range(n)]))
    res = run_cli(["import", str(src), "--workdir", str(tmp / "w"), "--out", str(tmp / "ds"),
                   "--shard-rows", str(max(1, shard_rows // 10))])
    assert res.code == 0, res.err
    return tmp / "ds"


def _inspect(mangle: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        ds = _dataset(tmp)
        mangle(ds)
        return ["inspect", str(ds)]
    return setup


def _import_dataset(*extra: str, shard_rows: int = 10, n: int = 3000) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        src = tmp / "many.jsonl"
        src.write_text(_jsonl([{"instruction": f"Task {i}", "output": f"a{i}"} for i in range(n)]))
        return ["import", str(src), "--workdir", str(tmp / "w"), "--out", str(tmp / "out"),
                "--shard-rows", str(shard_rows), *extra]
    return setup


def _minhash(tmp: Path) -> list[str]:
    ds = _dataset(tmp, n=600)
    return ["minhash", str(ds), "--workdir", str(tmp / "w"), "--out", str(tmp / "mh"), "--no-progress"]


# -- checks ------------------------------------------------------------------------------------------------

def _rows(folder: Path) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in folder.glob("part-*.parquet"))


def _rejected(folder: Path) -> list[dict]:
    return [r for p in sorted((folder / "rejected").glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]


def _expect_rows(kept: int, reasons: dict[str, int] | None = None) -> Callable[[Path, Result], None]:
    def check(tmp: Path, res: Result) -> None:
        got = _rows(tmp / "out")
        assert got == kept, f"{got} rows imported, expected {kept}"
        if reasons is not None:
            rej = _rejected(tmp / "out")
            counts: dict[str, int] = {}
            for r in rej:
                counts[r["drop_reason"]] = counts.get(r["drop_reason"], 0) + 1
            assert counts == reasons, f"rejected {counts}, expected {reasons}"
    return check


def _has_dev_full() -> str | None:
    return None if Path("/dev/full").exists() else "no /dev/full here"


def _warned(text: str) -> Callable[[Path, Result], None]:
    def check(tmp: Path, res: Result) -> None:
        assert res.err.count(text) == 1, f"{text!r} not said once on stderr: {res.err[:500]!r}"
    return check


def _shows(text: str) -> Callable[[Path, Result], None]:
    def check(tmp: Path, res: Result) -> None:
        assert text in res.out, f"{text!r} not in the output: {res.out[:500]!r}"
    return check


def _no_temporaries(folder: str) -> Callable[[Path, Result], None]:
    def check(tmp: Path, res: Result) -> None:
        left = [p for p in (tmp / folder).rglob("*") if p.is_file() and ".tmp-" in p.name]
        assert not left, f"temporaries left: {left}"
    return check


def _nothing_outside(tmp: Path, res: Result) -> None:
    """A refused run id wrote nothing: not where it pointed (tmp/x), not in the workdir (tmp/a/w)."""
    assert not (tmp / "x").exists(), f"{tmp / 'x'} was written"
    assert not (tmp / "a").exists(), f"wrote into the workdir: {list((tmp / 'a').rglob('*'))}"


def _run_id(rid: str) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        src = tmp / "rows.jsonl"
        src.write_text(_jsonl([GOOD]))
        return ["import", str(src), "--workdir", str(tmp / "a" / "w"), "--run-id", rid]
    return setup


# -- machine faults ----------------------------------------------------------------------------------------

@contextlib.contextmanager
def _enospc_after(module_attr: tuple[object, str], after_bytes: int = 0) -> Iterator[None]:
    """`obj.attr` (a write path) raises ENOSPC once `after_bytes` have gone through it (a full disk)."""
    obj, attr = module_attr
    real = getattr(obj, attr)
    seen = {"n": 0}

    def fake(*a, **k):
        seen["n"] += 1
        if seen["n"] > after_bytes:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*a, **k)
    setattr(obj, attr, fake)
    try:
        yield
    finally:
        setattr(obj, attr, real)


def _full_disk_import(tmp: Path):
    import pyarrow.parquet as pqm
    return _writes_fail(pqm, "write_table", errno.ENOSPC)


def _full_disk_minhash(tmp: Path):
    from pipeline.stages.minhash import blocks
    return _enospc_after((blocks.np, "save"), after_bytes=3)


@contextlib.contextmanager
def _full_disk_decisions(tmp: Path) -> Iterator[None]:
    """The minhash clusters phase's decisions file fills the disk half way."""
    real = pa.ipc.new_file

    def fake(sink, schema, *a, **k):
        if hasattr(sink, "write"):
            sink.write(b"ARROW1" + b"\0" * 4096)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    pa.ipc.new_file = fake
    try:
        yield
    finally:
        pa.ipc.new_file = real


@contextlib.contextmanager
def _writes_fail(obj: object, attr: str, err: int) -> Iterator[None]:
    """`obj.attr(table, where)` writes a little of its file and then fails with `err` (a full or read-only disk)."""
    real = getattr(obj, attr)

    def fake(table, where, *a, **k):
        if isinstance(where, (str, Path)):
            Path(where).write_bytes(b"PAR1" + b"\0" * 4096)   # the space a torn write holds
        raise OSError(err, os.strerror(err))
    setattr(obj, attr, fake)
    try:
        yield
    finally:
        setattr(obj, attr, real)


@functools.cache
def _can_mount() -> str | None:
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    probe = Path(tempfile.mkdtemp(prefix="distill-mount-probe-"))
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["umount", str(probe)], capture_output=True)
    probe.rmdir()
    return None if ok else "cannot mount a tmpfs here"


@contextlib.contextmanager
def _mounted(tmp: Path, name: str, opts: str) -> Iterator[Path]:
    where = tmp / name
    where.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _tiny_disk(tmp: Path):
    return _mounted(tmp, "tiny", "size=256k")


def _readonly_disk(tmp: Path):
    return _mounted(tmp, "ro", "ro,size=64k")


def _in_readonly(tmp: Path) -> list[str]:
    src = tmp / "rows.jsonl"
    src.write_text(_jsonl([GOOD]))
    return ["import", str(src), "--workdir", str(tmp / "ro" / "w")]


def _readonly_by_mode(tmp: Path) -> list[str]:
    src = tmp / "rows.jsonl"
    src.write_text(_jsonl([GOOD]))
    (tmp / "locked").mkdir()
    os.chmod(tmp / "locked", 0o555)
    return ["import", str(src), "--workdir", str(tmp / "locked" / "w")]


def _not_root() -> str | None:
    return "root writes through file modes" if os.geteuid() == 0 else None


def _tiny_import(tmp: Path) -> list[str]:
    src = tmp / "big.jsonl"
    src.write_text(_jsonl([{"instruction": f"Task {i} " + os.urandom(150).hex(), "output": "y"} for i in range(3000)]))
    return ["import", str(src), "--workdir", str(tmp / "w"), "--out", str(tmp / "tiny" / "out")]


def _tiny_minhash(tmp: Path) -> list[str]:
    ds = _dataset(tmp, n=3000)
    return ["minhash", str(ds), "--workdir", str(tmp / "w"), "--out", str(tmp / "tiny" / "mh"), "--no-progress"]


def _tiny_semdedup(tmp: Path) -> list[str]:
    ds = _dataset(tmp, n=200)
    return ["semdedup", str(ds), "--workdir", str(tmp / "tiny" / "w"), "--out", str(tmp / "tiny" / "sd"), "--no-progress"]


# -- the corpus --------------------------------------------------------------------------------------------

def _cases() -> list[Case]:
    C = Case
    good2 = _jsonl([GOOD, {"instruction": "Say hi", "output": "hi"}])
    return [
        # Parquet files that are not usable
        C("parquet_not_parquet", _import("x.parquet", "this is not parquet\n"), 3, "not a readable Parquet file"),
        C("parquet_empty_file", _import("x.parquet", b""), 3, "not a readable Parquet file"),
        C("parquet_truncated", _import_built("x.parquet", _truncated_parquet), 3, "not a readable Parquet file"),
        C("parquet_corrupt_body", _import_built("x.parquet", _corrupt_parquet), 3, "x.parquet"),
        C("parquet_wrong_schema", _import_built("x.parquet", lambda p: pq.write_table(pa.table({"a": [1], "b": ["x"]}), p)),
          3, "no 'instruction' or 'messages' column"),
        C("parquet_instruction_not_text", _import_built("x.parquet", lambda p: pq.write_table(pa.table({"instruction": [1, 2]}), p)),
          3, "no valid row"),
        C("parquet_record_schema_wrong_types", _import_built("x.parquet", _record_parquet_wrong_types), 3,
          "has the record schema's columns but not its types"),
        # JSON files
        C("json_huge_integer", _import("x.json", '[{"instruction": "x", "n": ' + "9" * 5000 + "}]"), 3, "invalid JSON"),
        C("json_empty", _import("x.json", ""), 3, "invalid JSON"),
        C("json_scalar", _import("x.json", "42"), 3, "expected a JSON array of rows or one object"),
        C("json_string", _import("x.json", '"hello"'), 3, "expected a JSON array of rows or one object"),
        C("json_list_of_numbers", _import("x.json", "[1, 2, 3]"), 3, "no valid row"),
        C("json_deeply_nested", _import("x.json", _deep(200_000)), 3, "nested too deeply"),
        C("json_deep_inside_row", _import("x.json", json.dumps([GOOD])[:-1] + ', {"instruction": "x", "a": ' + _deep(100_000) + "}]"),
          3, "nested too deeply"),
        C("json_binary_garbage", _import("x.json", bytes(range(256)) * 40), 3, "not UTF-8"),
        C("json_bom", _import("x.json", b"\xef\xbb\xbf" + json.dumps([GOOD]).encode()), 0, "imported 1 rows",
          _expect_rows(1, {})),
        C("json_truncated", _import("x.json", json.dumps([GOOD, GOOD])[:30]), 3, "invalid JSON"),
        # JSONL files
        C("jsonl_empty", _import("x.jsonl", ""), 3, "the file holds no rows"),
        C("jsonl_blank_lines", _import("x.jsonl", "\n\n  \n"), 3, "the file holds no rows"),
        C("jsonl_deep_row", _import("x.jsonl", good2 + _deep(100_000) + "\n" + _jsonl([GOOD])), 0, "too_deep=1",
          _expect_rows(3, {"too_deep": 1})),
        C("jsonl_deep_object_row", _import("x.jsonl", good2 + '{"instruction": "x", "a": ' + _deep(50_000) + "}\n"),
          0, "too_deep=1", _expect_rows(2, {"too_deep": 1})),
        C("jsonl_lone_surrogate_escaped", _import("x.jsonl", good2 + '{"instruction": "bad \\ud800 text"}\n'),
          0, "not_utf8=1", _expect_rows(2, {"not_utf8": 1})),
        C("jsonl_lone_surrogate_in_key", _import("x.jsonl", good2 + '{"instruction": "ok", "\\udfff": 1}\n'),
          0, "not_utf8=1", _expect_rows(2, {"not_utf8": 1})),
        C("jsonl_invalid_utf8_bytes", _import("x.jsonl", good2.encode() + b'{"instruction": "caf\xe9 \xed\xa0\x80"}\n'),
          0, "not_utf8=1", _expect_rows(2, {"not_utf8": 1})),
        C("jsonl_bom", _import("x.jsonl", b"\xef\xbb\xbf" + good2.encode()), 0, "imported 2 rows",
          _expect_rows(2, {})),
        C("jsonl_utf16", _import("x.jsonl", good2.encode("utf-16")), 3, "UTF-16 text; save it as UTF-8"),
        C("jsonl_binary_garbage", _import("x.jsonl", bytes(range(256)) * 40), 3, "no valid row"),
        C("jsonl_is_csv", _import("x.jsonl", "instruction,output\nName a colour,red\nSay hi,hi\n"), 3, "no valid row"),
        C("jsonl_all_arrays", _import("x.jsonl", "[1]\n[2]\n"), 3, "no valid row"),
        C("jsonl_wrong_type_row", _import("x.jsonl", good2 + '{"instruction": 3}\n'), 0, "wrong_type=1",
          _expect_rows(2, {"wrong_type": 1})),
        C("jsonl_nul_bytes", _import("x.jsonl", good2 + "\x00\x00\x00\n"), 0, "invalid_json=1", _expect_rows(2, {"invalid_json": 1})),
        C("jsonl_huge_garbage_line", _import("x.jsonl", good2 + "{" + "x" * 8_000_000 + "\n"), 0, "invalid_json=1",
          _expect_rows(2, {"invalid_json": 1})),
        C("jsonl_huge_valid_line", _import("x.jsonl", _jsonl([{"instruction": "word " * 1_000_000}])), 0, "imported 1 rows"),
        C("jsonl_huge_integer", _import("x.jsonl", good2 + '{"instruction": "x", "n": ' + "9" * 5000 + "}\n"), 0,
          "invalid_json=1", _expect_rows(2, {"invalid_json": 1})),
        C("jsonl_limit_past_first_shard", _import_dataset("--limit", "300"), 0, "imported 300 rows", _expect_rows(300)),
        C("jsonl_limit_not_multiple", _import_dataset("--limit", "205", shard_rows=1), 0, "imported 205 rows", _expect_rows(205)),
        # files that are not files
        C("missing_file", lambda t: ["import", str(t / "nope.jsonl"), "--workdir", str(t / "w")], 3, "no such file"),
        C("directory_as_file", lambda t: (t / "d.jsonl").mkdir() or ["import", str(t / "d.jsonl"), "--workdir", str(t / "w")],
          3, "is a folder"),
        C("not_a_regular_file", lambda t: ["import", "/dev/null", "--workdir", str(t / "w")], 3, "not a regular file"),
        C("unknown_suffix", _import("x.txt", "hello"), 3, "unknown file type"),
        C("no_suffix", _import("rows", _jsonl([GOOD])), 3, "unknown file type"),
        # config files and values
        C("config_missing", lambda t: ["config", "show", "--config", str(t / "nope.toml")], 2, "config file not found"),
        C("config_import_missing", lambda t: ["import", str(t / "x.jsonl"), "--config", str(t / "nope.toml"),
                                              "--workdir", str(t / "w")], 2, "config file not found"),
        C("config_not_toml", _config("[run\nshard_rows = 3"), 2, "not valid TOML"),
        C("config_not_utf8", _config(b"[run]\nrun_id = '\xff\xfe'\n"), 2, "not UTF-8"),
        C("config_deeply_nested", _config("a = " + _deep(100_000) + "\n"), 2, "distill.toml"),
        C("config_with_bom", _config(b"\xef\xbb\xbf[run]\nshard_rows = 7\n"), 0, "", _shows("shard_rows = 7")),
        C("config_unknown_key", _config("[run]\nshard_rowz = 10\n"), 2, "run.shard_rowz"),
        C("config_unknown_section", _config("[bogus]\nx = 1\n"), 2, "bogus"),
        C("config_wrong_type", _config("[run]\nshard_rows = 'many'\n", "import"), 2, "run.shard_rows"),
        C("config_negative_shard_rows", _config("[run]\nshard_rows = -5\n", "import"), 2, "run.shard_rows"),
        C("config_unknown_backend", _config("[teacher]\nbackend = 'nope'\n", "import"), 2, "teacher.backend"),
        C("config_is_a_folder", lambda t: (t / "c.toml").mkdir() or ["config", "show", "--config", str(t / "c.toml")],
          2, "is a folder, not a TOML file"),
        C("config_bad_run_id", _config("[run]\nrun_id = '../../x'\n", "import"), 2, "run id", _nothing_outside),
        C("progress_interval_not_a_number", _minhash, 2, "DISTILL_PROGRESS_INTERVAL",
          env={"DISTILL_PROGRESS_INTERVAL": "soon"}),
        # CLI values
        C("limit_zero", _import("x.jsonl", _jsonl([GOOD]), "--limit", "0"), 2, "import [OPTIONS]"),
        C("shard_rows_negative", _import("x.jsonl", _jsonl([GOOD]), "--shard-rows", "-3"), 2, "import [OPTIONS]"),
        C("run_id_parent_escape", _run_id("../../x"), 2, "run id", _nothing_outside),
        C("run_id_slash", _run_id("a/b"), 2, "run id", _nothing_outside),
        C("run_id_dot", _run_id(".hidden"), 2, "run id", _nothing_outside),
        C("run_id_dotdot", _run_id(".."), 2, "run id", _nothing_outside),
        C("run_id_is_the_current_file", _run_id("CURRENT"), 2, "run id", _nothing_outside),
        C("current_file_escapes", _current_escapes, 2, "run id"),
        # the machine
        C("workdir_is_a_file", lambda t: (t / "f").write_text("x") and _import("x.jsonl", _jsonl([GOOD]))(t)[:2] + ["--workdir", str(t / "f" / "w")],
          5, "Not a directory"),
        C("log_json_in_missing_parent_file", lambda t: (t / "f").write_text("x") and ["--log-json", str(t / "f" / "log.jsonl"), "config", "show"],
          2, "--log-json"),
        C("log_json_is_a_folder", lambda t: ["--log-json", str(t), "config", "show"], 2, "--log-json"),
        C("log_json_on_a_full_disk", lambda t: ["--log-json", "/dev/full", "import", str(t / "nope.jsonl"),
                                                "--workdir", str(t / "w")], 3, "no such file",
          _warned("--log-json /dev/full: cannot write"), needs=_has_dev_full),
        C("readonly_workdir_mode", _readonly_by_mode, 5, "cannot write", needs=_not_root),
        C("readonly_workdir_mount", _in_readonly, 5, "cannot write", patch=_readonly_disk, needs=_can_mount),
        C("full_disk_import", _import_dataset(n=50), 5, "disk full", _no_temporaries("out"), patch=_full_disk_import),
        C("full_disk_minhash", _minhash, 5, "disk full", _no_temporaries("mh"), patch=_full_disk_minhash),
        C("full_disk_minhash_decisions", _minhash, 5, "decisions.arrow: disk full", _no_temporaries("mh"),
          patch=_full_disk_decisions),
        C("tiny_disk_import", _tiny_import, 5, "disk full", patch=_tiny_disk_checked("out"), needs=_can_mount),
        C("tiny_disk_minhash", _tiny_minhash, 5, "disk full", patch=_tiny_disk_checked("mh"), needs=_can_mount),
        C("tiny_disk_semdedup", _tiny_semdedup, 5, "disk full", patch=_tiny_disk_checked("w"), needs=_can_mount,
          slow=True),
        # datasets to inspect
        C("inspect_missing", lambda t: ["inspect", str(t / "nope")], 3, "no such dataset folder"),
        C("inspect_a_file", lambda t: (t / "f.jsonl").write_text("x") and ["inspect", str(t / "f.jsonl")], 3, "is a file"),
        C("inspect_empty_folder", lambda t: ["inspect", str(t)], 3, "not a dataset folder"),
        C("inspect_corrupt_body", _inspect(lambda ds: corrupt_body(ds / "part-00001.parquet")), 3, "part-00001.parquet"),
        C("inspect_garbage_shard", _inspect(lambda ds: (ds / "part-00000.parquet").write_bytes(b"garbage")), 3,
          "part-00000.parquet"),
        C("inspect_truncated_shard", _inspect(lambda ds: (ds / "part-00000.parquet").write_bytes(
            (ds / "part-00000.parquet").read_bytes()[:100])), 3, "part-00000.parquet"),
        C("inspect_corrupt_rejected_shard", _inspect_rejected_corrupt, 3, "rejected: unhealthy"),
        C("inspect_unknown_chain_id", lambda t: ["inspect", str(_dataset(t, n=50)), "--chain", "no-such-id"], 3,
          "no row with id 'no-such-id'"),
        C("inspect_corrupt_manifest", _inspect(lambda ds: (ds / "_manifest.json").write_text("{not json")), 3, "_manifest.json"),
    ]


def _inspect_rejected_corrupt(tmp: Path) -> list[str]:
    src = tmp / "half.jsonl"
    src.write_text(_jsonl([{"instruction": f"Task {i}"} for i in range(300)] + [[i] for i in range(300)]))
    assert run_cli(["import", str(src), "--workdir", str(tmp / "w"), "--out", str(tmp / "ds")]).code == 0
    corrupt_body(tmp / "ds" / "rejected" / "part-00000.parquet")
    return ["inspect", str(tmp / "ds")]


def _current_escapes(tmp: Path) -> list[str]:
    (tmp / "w").mkdir()
    (tmp / "w" / "CURRENT").write_text("../../x\n")
    src = tmp / "x.jsonl"
    src.write_text(_jsonl([GOOD]))
    return ["import", str(src), "--workdir", str(tmp / "w")]


def _tiny_disk_checked(folder: str):
    """A 256 KiB tmpfs at tmp/tiny; before it goes, no temporary may be left holding its space."""
    @contextlib.contextmanager
    def patch(tmp: Path) -> Iterator[None]:
        with _tiny_disk(tmp) as where:
            yield
            left = [p for p in where.rglob("*") if p.is_file() and ".tmp-" in p.name]
            assert not left, f"temporaries left on the full disk: {left}"
    return patch


CASES: list[Case] = _cases()
