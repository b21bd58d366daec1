"""Teacher fault runs: `distill orca` against a teacher that fails, then rerun once the teacher is fixed.

    python scripts/chaos_faults.py [--rows N] [--faults NAME,...] [--dir DIR]

Each fault starts a loopback OpenAI-compatible stand-in (tests/faultserver.py)
that fails in one way from its first request: a wrong API key (401), 5xx, every
connection dropped, a black hole (accepts, never answers), a server that is not
OpenAI-compatible (404 on /chat/completions, or a 200 that is not a chat
completion); or turns to 401 or to a black hole after TURN_AFTER requests. One
more points the config at an unresolvable host (no-such-host.invalid). The
config has short timeouts (timeout_s, ping_timeout_s), so a black hole ends in
seconds.

A fault run records the exit code, the first line of stderr, the seconds taken,
the rows in rejected/ whose reason is teacher_error and the shards marked done.
Then the teacher is fixed (the same server, on the same port, answers every
request; the unresolvable host's config is pointed at it) and the same command
reruns into the same --out: its exit code, its rows out and the rows still
unanswered (input rows minus kept minus rejected). Prints one line per fault,
then the total:

    fault runs: 9, exit 4: 9, teacher_error drops: 0, rows unanswered after the rerun: 0, seconds to exit 4: max X

The input is ROWS rows of data/seed_tasks.jsonl, imported with `distill import`.
tests/test_chaos_faults.py runs two of the faults. Reads data/seed_tasks.jsonl;
writes only under --dir (default: a temporary folder, removed).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import pyarrow.parquet as pq  # noqa: E402
from faultserver import FaultServer, TurnAt  # noqa: E402

ROWS = 40                 # input rows
SHARD_ROWS = 5            # orca's shards: a mid-run fault finds some done, some not
TURN_AFTER = 12           # requests a mid-run fault answers before it turns
UNRESOLVABLE = "http://no-such-host.invalid/v1"
TIMEOUT_S = 60.0          # one orca run; past it the run is killed and counted as hung
TEACHER = {"backend": "openai", "model": "fault-model", "concurrency": 4, "max_retries": 1, "timeout_s": 1.0,
           "ping_timeout_s": 1.0, "breaker_consecutive": 8}


@dataclass(frozen=True)
class Fault:
    name: str
    action: str | None = None        # faultserver's action for every chat request, from the first
    turn_after: int | None = None    # ... or only after this many requests (the ping excepted)
    models_status: int = 200         # what GET /models answers while the fault lasts
    unresolvable: bool = False       # the config names a host that does not resolve

    def plan(self):
        if self.turn_after is not None:
            return TurnAt(self.turn_after, self.action)
        return lambda content, attempt: self.action


FAULTS = (
    Fault("wrong key (401)", "401", models_status=401),
    Fault("server answers 5xx", "500"),
    Fault("server drops every request", "drop"),
    Fault("black hole", "blackhole"),
    Fault("unresolvable host", unresolvable=True),
    Fault("not OpenAI-compatible (404)", "404", models_status=404),
    Fault("not OpenAI-compatible (200, not a chat completion)", "badjson"),
    Fault(f"turns 401 after {TURN_AFTER} requests", "401", turn_after=TURN_AFTER),
    Fault(f"turns black hole after {TURN_AFTER} requests", "blackhole", turn_after=TURN_AFTER),
)
BY_KEY = {k: f for k, f in zip(("401", "5xx", "drop", "blackhole", "dns", "404", "not-chat", "mid-401",
                                "mid-blackhole"), FAULTS)}


@dataclass
class FaultRun:
    fault: str
    rc: int | None                   # the faulty run's exit code (None: killed after TIMEOUT_S)
    first_line: str                  # its stderr's first line
    seconds: float
    teacher_error: int               # rows in rejected/ with reason teacher_error after the faulty run
    done: int                        # shards marked done after the faulty run
    requests: int                    # chat requests the server saw during the faulty run (the ping's too)
    manifest: bool                   # the faulty run wrote a manifest (marked its output complete)
    rerun_rc: int | None
    rerun_line: str                  # the rerun's first stderr line when it failed
    rows_out: int                    # kept rows after the rerun
    rejected: int                    # rejected rows after the rerun (any reason)
    teacher_error_total: int         # distinct rows dropped as teacher_error by either run
    unanswered: int                  # input rows neither kept nor rejected after the rerun

    @property
    def ok(self) -> bool:
        return (self.rc == 4 and not self.manifest and self.rerun_rc == 0 and self.teacher_error_total == 0
                and self.unanswered == 0)

    def line(self) -> str:
        rerun = f"rerun exit {self.rerun_rc}" + (f" ({self.rerun_line})" if self.rerun_rc != 0 else "")
        return (f"{self.fault}: exit {self.rc} in {self.seconds:.1f} s, {self.requests} requests, "
                f"teacher_error drops {self.teacher_error}, shards done {self.done}, "
                f"manifest {'yes' if self.manifest else 'no'}; {rerun}, rows out {self.rows_out}, "
                f"rejected {self.rejected} (teacher_error {self.teacher_error_total}), "
                f"unanswered {self.unanswered} | {self.first_line}")


def first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0][:300] if lines else ""


def rows_by_reason(folder: Path) -> tuple[int, int, set[str]]:
    """(kept rows in shards marked done, rejected rows in them, ids of teacher_error rows), read off the shard
    files and markers (a failed run leaves no manifest). Every rejected shard file counts for teacher_error,
    marked or not: a teacher_error row written anywhere is a drop that should not be."""
    kept = rejected = 0
    teacher_error: set[str] = set()
    done = {p.stem for p in (folder / "_done").glob("part-*.json")}
    for p in folder.glob("part-*.parquet"):
        if p.stem in done:
            kept += pq.read_metadata(p).num_rows
    for p in (folder / "rejected").glob("part-*.parquet"):
        t = pq.read_table(p, columns=["id", "drop_reason"]).to_pylist()
        teacher_error |= {r["id"] for r in t if r["drop_reason"] == "teacher_error"}
        if p.stem in done:
            rejected += len(t)
    return kept, rejected, teacher_error


class Faults:
    """The imported input and the runs, under one folder."""

    def __init__(self, root: Path, rows: int = ROWS):
        self.root, self.rows = Path(root), rows
        self.root.mkdir(parents=True, exist_ok=True)
        self.input = self.root / "input"
        if not (self.input / "_manifest.json").exists():
            r = self.distill("import", str(ROOT / "data" / "seed_tasks.jsonl"), "--limit", str(rows),
                             "--out", str(self.input), "--workdir", str(self.root / "import-work"), "--run-id", "seed")
            if r[0] != 0:
                raise RuntimeError(f"distill import failed ({r[0]}): {r[1]}")
        self.rows = json.loads((self.input / "_manifest.json").read_text())["rows_out"]

    def env(self) -> dict[str, str]:
        return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                    OPENAI_API_KEY="chaos-key", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")

    def distill(self, *args: str) -> tuple[int | None, str, float]:
        """Run the CLI: (exit code, stderr, seconds); a run past TIMEOUT_S is killed (exit None)."""
        t0 = time.monotonic()
        p = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], env=self.env(), cwd=self.root,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        try:
            _, err = p.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            _, err = p.communicate()
            return None, f"killed after {TIMEOUT_S:.0f} s: " + err.decode(errors="replace"), time.monotonic() - t0
        return p.returncode, err.decode(errors="replace"), time.monotonic() - t0

    def config(self, path: Path, base_url: str) -> Path:
        t = {**TEACHER, "base_url": base_url}
        lines = ["[teacher]"] + [f"{k} = {json.dumps(v)}" for k, v in t.items()]
        path.write_text("\n".join(lines) + "\n")
        return path

    def orca(self, base: Path, conf: Path) -> tuple[int | None, str, float]:
        return self.distill("orca", str(self.input), "-c", str(conf), "--out", str(base / "out"),
                            "--workdir", str(base / "work"), "--run-id", "faults", "--shard-rows", str(SHARD_ROWS),
                            "--no-progress")

    def run(self, fault: Fault) -> FaultRun:
        base = self.root / "runs" / "".join(c if c.isalnum() else "-" for c in fault.name)
        if base.exists():
            raise RuntimeError(f"{base} exists: each fault runs into a fresh folder (pass another --dir)")
        base.mkdir(parents=True)
        out = base / "out"
        srv = FaultServer(fault.plan(), models_status=fault.models_status).start()
        try:
            conf = self.config(base / "distill.toml", UNRESOLVABLE if fault.unresolvable else srv.base_url)
            rc, err, seconds = self.orca(base, conf)
            requests = sum(srv.received.values())
            _, _, first_te = rows_by_reason(out)
            done = len(list((out / "_done").glob("part-*.json")))
            manifest = (out / "_manifest.json").exists()
            # The fix: the same server answers everything (held requests closed); the unresolvable host's
            # config is pointed at it.
            if isinstance(srv.plan, TurnAt):
                srv.plan.fix()
            else:
                srv.plan = lambda content, attempt: "ok"
            srv.models_status = 200
            srv.release()
            if fault.unresolvable:
                self.config(conf, srv.base_url)
            rerun_rc, rerun_err, _ = self.orca(base, conf)
        finally:
            srv.stop()
        kept, rejected, rerun_te = rows_by_reason(out)
        if (out / "_manifest.json").exists():
            m = json.loads((out / "_manifest.json").read_text())
            kept, rejected = m["rows_out"], m["rows_rejected"]
        return FaultRun(fault.name, rc, first_line(err), seconds, len(first_te), done, requests, manifest, rerun_rc,
                        first_line(rerun_err), kept, rejected, len(first_te | rerun_te), self.rows - kept - rejected)


def total_line(runs: list[FaultRun], rows: int) -> str:
    exit4 = [r for r in runs if r.rc == 4]
    slowest = max((r.seconds for r in exit4), default=0.0)
    return (f"fault runs: {len(runs)}, exit 4: {len(exit4)}, "
            f"teacher_error drops: {sum(r.teacher_error_total for r in runs)}, "
            f"rows unanswered after the rerun: {sum(r.unanswered for r in runs)}, "
            f"seconds to exit 4: max {slowest:.1f}; reruns exit 0: {sum(r.rerun_rc == 0 for r in runs)}, "
            f"input rows per run: {rows}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=ROWS, help="input rows (of data/seed_tasks.jsonl)")
    ap.add_argument("--faults", default=",".join(BY_KEY), help="comma-separated, of " + ", ".join(BY_KEY))
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    args = ap.parse_args(argv)
    unknown = [k for k in args.faults.split(",") if k and k not in BY_KEY]
    if unknown:
        ap.error(f"unknown fault {', '.join(unknown)}; known: {', '.join(BY_KEY)}")
    tmp = None if args.dir else tempfile.TemporaryDirectory(prefix="chaos-faults-")
    try:
        faults = Faults(args.dir or Path(tmp.name), rows=args.rows)
        runs = []
        for key in (k for k in args.faults.split(",") if k):
            runs.append(faults.run(BY_KEY[key]))
            print(runs[-1].line(), flush=True)
        print(total_line(runs, faults.rows))
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
