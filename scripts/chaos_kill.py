"""kill -9 chaos trials: `distill import`, `orca`, `minhash` and `score` killed at seeded random moments, then rerun.

    python scripts/chaos_kill.py [--trials N] [--kills K] [--commands import,orca,minhash,score]
                                 [--seed S] [--concurrent N] [--dir DIR]

Each command first runs once unkilled (the reference). A trial then starts it
into a fresh --out and workdir, sends SIGKILL to its process group after a
random delay (a seeded RNG's, between the CLI start and 0.8 of the
reference's wall time) K times, checks after each kill that every visible
shard is whole, and reruns it to completion. The finished folder must hold the reference's rows exactly: ids and
content (every column but run_id, created_at and meta), kept and rejected
alike, none twice. Orca asks a loopback OpenAI-compatible server
(tests/faultserver.py) that counts requests by their whole body; a body asked
twice is a repeated request, to be compared with the requests in flight at
the kills (the teacher concurrency bounds them); its kills land after a seeded
number of requests rather than a delay. Prints one line per trial,
then the total:

    kill -9 trials: N, rows lost: L, rows duplicated: D, requests repeated: R (in flight at kill: F)

`--concurrent N` adds N trials of two writers into one --out (the second
started while the first runs): how often the second exited 6 (locked), and
whether the first finished with the reference's rows.

tests/test_chaos_kill.py runs the same trials, fewer of them. Reads nothing
outside --dir (default: a temporary folder); writes only there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import pyarrow.parquet as pq  # noqa: E402
from faultserver import FaultServer  # noqa: E402

from pipeline.importer import import_file  # noqa: E402
from pipeline.store import Dataset  # noqa: E402

COMMANDS = ("import", "orca", "minhash", "score")
CONCURRENCY = 4          # [teacher] concurrency of the orca trials: the requests in flight at a kill
VOLATILE = {"run_id", "created_at", "meta"}  # differ between two runs of the same rows
ROWS = {"import": 20000, "orca": 128, "minhash": 20000, "score": 5000}  # input rows of each command
CI_ROWS = {"import": 6000, "orca": 64, "minhash": 6000, "score": 3000}    # tests/test_chaos_kill.py's
# A run's wall-clock limit: a hung run must end the trial, but a loaded 2-core CI machine took over 300 s
# for the 3,000-row score reference (its relevance encoder embeds one text per pass).
RUN_TIMEOUT_S = 900
TEACHER_DELAY_S = 0.05   # the loopback server's answer time: a kill finds requests in flight


@dataclass
class Trial:
    command: str
    index: int
    kills: int = 0                       # SIGKILLs that found the command still running
    delays: list[float] = field(default_factory=list)
    done_at_kill: list[int] = field(default_factory=list)  # shards marked done when each kill landed
    lost: int = 0                        # reference rows (kept or rejected) missing from the finished folder
    duplicated: int = 0                  # rows there more often than in the reference
    changed: int = 0                     # rows there that the reference does not hold (other content)
    partial: list[str] = field(default_factory=list)   # a visible shard not whole, seen after a kill
    repeated: int = 0                    # teacher requests asked twice with the same body (orca)
    in_flight: int = 0                   # requests in flight at the kills, as the server saw them (orca)
    error: str | None = None             # the rerun did not finish with exit 0

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.changed or self.partial or self.error)

    def line(self) -> str:
        teacher = f", requests repeated {self.repeated} (in flight at kill {self.in_flight}, bound " \
                  f"{self.kills * CONCURRENCY})" if self.command == "orca" else ""
        delays = ", ".join(f"{d:.2f} s ({n} shards done)" for d, n in zip(self.delays, self.done_at_kill))
        return (f"{self.command} trial {self.index}: {self.kills} kills at [{delays}], rows lost {self.lost}, "
                f"duplicated {self.duplicated}, changed {self.changed}, partial shards {len(self.partial)}{teacher}"
                + (f"; rerun failed: {self.error}" if self.error else ""))


@dataclass
class Run:
    rc: int | None
    seconds: float
    log: str


class Chaos:
    """The inputs, the commands and the trials, under one folder."""

    def __init__(self, root: Path, seed: int = 0, rows: dict[str, int] = ROWS):
        self.root, self.seed, self.rows = Path(root), seed, rows
        self.root.mkdir(parents=True, exist_ok=True)
        self.reference_rows: dict[str, Counter] = {}
        self.reference_seconds: dict[str, float] = {}
        self._make_inputs()
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-m", "pipeline.cli", "--version"], env=self._env(), capture_output=True)
        self.startup_s = time.monotonic() - t0  # kills before this find no work begun

    # -- inputs ---------------------------------------------------------------

    def _make_inputs(self) -> None:
        """A JSONL file (answers of varied length, one row in 40 a near-copy of another, a few bad lines)
        and datasets of its first rows, the inputs of orca, minhash and score."""
        rng = random.Random(self.seed)
        words = [f"w{i}" for i in range(400)]
        lines, texts = [], []
        for i in range(self.rows["import"]):
            if i % 40 == 39:
                text = texts[i - rng.randrange(1, 30)] + " again"
            else:
                text = " ".join(rng.choice(words) for _ in range(30))
            texts.append(text)
            lines.append(json.dumps({"instruction": f"Task {i}: {text}", "input": "",
                                     "output": " ".join(rng.choice(words) for _ in range(rng.randrange(1, 60)))}))
            if i % 500 == 250:
                lines.append("{not json")
        self.jsonl = self.root / "input.jsonl"
        self.jsonl.write_text("\n".join(lines) + "\n")
        self.inputs = {c: self._dataset(f"dataset-{self.rows[c]}", lines[:self.rows[c]])
                       for c in COMMANDS if c != "import"}

    def _dataset(self, name: str, lines: list[str]) -> Path:
        folder = self.root / name
        if not (folder / "_manifest.json").exists():
            src = self.root / f"{name}.jsonl"
            src.write_text("\n".join(lines) + "\n")
            import_file(src, folder, run_id="chaos-input", shard_rows=500)
        return folder

    def argv(self, command: str, out: Path, workdir: Path, url: str | None) -> list[str]:
        common = ["--out", str(out), "--workdir", str(workdir), "--run-id", "chaos"]
        if command == "import":
            return ["import", str(self.jsonl), *common, "--shard-rows", "20"]   # shards of 200 rows
        if command == "orca":
            conf = workdir.parent / f"{workdir.name}.toml"
            conf.parent.mkdir(parents=True, exist_ok=True)
            conf.write_text(f'[teacher]\nbackend = "openai"\nbase_url = "{url}"\nmodel = "fault-model"\n'
                            f"concurrency = {CONCURRENCY}\nmax_retries = 0\n")
            return ["orca", str(self.inputs["orca"]), *common, "-c", str(conf), "--shard-rows", "32", "--no-progress"]
        if command == "minhash":
            return ["minhash", str(self.inputs["minhash"]), *common, "--shard-rows", "1000", "--workers", "2",
                    "--no-progress"]
        if command == "score":
            return ["score", str(self.inputs["score"]), *common, "--shard-rows", "150", "--no-progress"]
        raise ValueError(f"unknown command {command!r}; known: {', '.join(COMMANDS)}")

    # -- running --------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                    OPENAI_API_KEY="chaos-key", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")

    def start(self, command: str, out: Path, workdir: Path, url: str | None) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "pipeline.cli", *self.argv(command, out, workdir, url)],
                                env=self._env(), cwd=self.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own group: a kill takes its workers too

    def run(self, command: str, out: Path, workdir: Path, url: str | None, timeout: float = RUN_TIMEOUT_S) -> Run:
        t0 = time.monotonic()
        p = self.start(command, out, workdir, url)
        try:
            log = p.communicate(timeout=timeout)[0]
        except subprocess.TimeoutExpired:
            _kill(p)
            log = p.communicate()[0] + f"\n[chaos] killed: still running after {timeout:.0f} s".encode()
        return Run(p.returncode, time.monotonic() - t0, log.decode(errors="replace"))

    def reference(self, command: str) -> Counter:
        """The unkilled run's rows (and its wall time, which the kill delays are drawn from)."""
        if command not in self.reference_rows:
            base = _fresh(self.root / "reference" / command)
            with _server() as srv:
                r = self.run(command, base / "out", base / "work", srv.base_url)
            if r.rc != 0:
                raise RuntimeError(f"the reference {command} run failed ({r.rc}): {r.log[-2000:]}")
            self.reference_rows[command] = rows_of(base / "out")
            self.reference_seconds[command] = r.seconds
        return self.reference_rows[command]

    def trial(self, command: str, index: int, kills: int = 2) -> Trial:
        ref = self.reference(command)
        total = self.reference_seconds[command]
        rng = random.Random(f"{self.seed}:{command}:{index}")
        t = Trial(command, index)
        base = _fresh(self.root / "trials" / f"{command}-{index}")
        out, workdir = base / "out", base / "work"
        with _server() as srv:
            for _ in range(kills):
                delay = rng.uniform(min(self.startup_s, 0.5 * total), 0.8 * total)
                unanswered = sum(srv.received.values()) - sum(srv.answered.values())  # by earlier kills
                asked = sum(srv.received.values())
                t0 = time.monotonic()
                p = self.start(command, out, workdir, srv.base_url)
                if command == "orca":
                    # The kill lands after a seeded number of this run's requests (and a bit of one answer
                    # time), wherever a loaded machine's clock would have put it.
                    target = asked + rng.randint(1, self.rows["orca"] // 2)
                    while sum(srv.received.values()) < target and p.poll() is None:
                        time.sleep(0.005)
                    time.sleep(rng.uniform(0, TEACHER_DELAY_S))
                    delay = time.monotonic() - t0
                else:
                    time.sleep(delay)  # fault injection: where the kill lands, not synchronisation
                if p.poll() is None:
                    t.in_flight += sum(srv.received.values()) - sum(srv.answered.values()) - unanswered
                    _kill(p)
                    t.kills += 1
                    t.delays.append(delay)
                    t.done_at_kill.append(len(list((out / "_done").glob("part-*.json"))))
                p.communicate()
                t.partial += partial_shards(out)
            r = self.run(command, out, workdir, srv.base_url)
            # A row's request (its user turn opens with the row's "Task N:"); a ping sent before any
            # work is the same body on every run by design, not an answer paid twice.
            t.repeated = sum(c - 1 for (content, _), c in srv.by_body.items() if c > 1 and content.startswith("Task "))
        if r.rc != 0:
            t.error = f"exit {r.rc}: {_last_line(r.log)}"
            return t
        leftovers = [str(p.relative_to(out)) for p in out.rglob("*") if ".tmp-" in p.name]
        t.partial += [f"{n} (temporary left after the rerun)" for n in leftovers]
        t.lost, t.duplicated, t.changed = compare(ref, rows_of(out))
        return t

    def concurrent(self, command: str, index: int) -> tuple[int | None, bool, str]:
        """Two writers into one --out (the same command, workdir and run, as two overlapping cron jobs),
        the second started while the first runs: (the second's exit code, whether the first finished
        with exit 0 and the reference's rows, a note)."""
        ref = self.reference(command)
        rng = random.Random(f"{self.seed}:concurrent:{command}:{index}")
        base = _fresh(self.root / "concurrent" / f"{command}-{index}")
        out, workdir = base / "out", base / "work"
        with _server() as srv:
            first = self.start(command, out, workdir, srv.base_url)
            time.sleep(rng.uniform(0.2, 0.6) * self.reference_seconds[command])
            second = self.run(command, out, workdir, srv.base_url)
            try:
                log = first.communicate(timeout=RUN_TIMEOUT_S)[0].decode(errors="replace")
            except subprocess.TimeoutExpired:
                _kill(first)
                log = "timed out"
            asked = sum(srv.received.values())
        intact = first.returncode == 0 and compare(ref, rows_of(out)) == (0, 0, 0)
        notes = [] if first.returncode == 0 else [f"first exited {first.returncode}: {_last_line(log)}"]
        if second.rc not in (0, 6):
            notes.append(f"second: {_last_line(second.log)}")
        if command == "orca":
            notes.append(f"teacher asked {asked} requests for {self.rows['orca']} rows")
        return second.rc, intact, "; ".join(notes)


def _fresh(folder: Path) -> Path:
    """`folder`, emptied: a --dir used before must not hand a trial a finished output."""
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def _last_line(log: str) -> str:
    lines = log.strip().splitlines()
    return lines[-1][:300] if lines else ""


def _kill(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()


class _server:
    """A loopback teacher that answers after TEACHER_DELAY_S and counts requests by their whole body."""

    def __enter__(self) -> FaultServer:
        self.srv = FaultServer(delay=TEACHER_DELAY_S).start()
        return self.srv

    def __exit__(self, *exc: Any) -> None:
        self.srv.stop()


def rows_of(folder: Path) -> Counter:
    """The finished folder's kept and rejected rows as (kind, id, content) with their counts."""
    ds = Dataset(folder, require_complete=True)
    out: Counter = Counter()
    for kind, d in (("kept", ds), ("rejected", ds.rejected())):
        if d is None:
            continue
        for row in d.read().to_pylist():
            content = json.dumps({k: v for k, v in row.items() if k not in VOLATILE}, sort_keys=True, default=str)
            out[(kind, row["id"], hashlib.sha256(content.encode()).hexdigest())] += 1
    return out


def compare(ref: Counter, got: Counter) -> tuple[int, int, int]:
    """(rows lost, rows duplicated, rows changed) of `got` against the reference."""
    lost = sum((ref - got).values())
    ids_ref = Counter()
    ids_got = Counter()
    for (kind, rid, _), n in ref.items():
        ids_ref[(kind, rid)] += n
    for (kind, rid, _), n in got.items():
        ids_got[(kind, rid)] += n
    duplicated = sum(max(0, n - max(ids_ref[k], 1)) for k, n in ids_got.items())
    changed = sum((got - ref).values()) - duplicated
    return lost, duplicated, max(0, changed)


def partial_shards(folder: Path) -> list[str]:
    """Visible shards that are not whole: unreadable Parquet, or a done marker whose shard is missing or
    holds another number of rows."""
    bad = []
    if not folder.exists():
        return bad
    for sub in (folder, folder / "rejected"):
        for p in sorted(sub.glob("part-*.parquet")):
            try:
                pq.read_table(p)
            except Exception as e:  # noqa: BLE001 - any failure to read is what is counted
                bad.append(f"{p.relative_to(folder)}: unreadable ({type(e).__name__})")
    for m in sorted((folder / "_done").glob("part-*.json")):
        try:
            marker = json.loads(m.read_text())
        except ValueError:
            bad.append(f"{m.relative_to(folder)}: not JSON")
            continue
        shard = folder / f"{m.stem}.parquet"
        if not shard.exists():
            bad.append(f"{m.relative_to(folder)}: marks {shard.name}, which is missing")
        elif pq.read_metadata(shard).num_rows != marker.get("rows_out"):
            bad.append(f"{shard.name}: {pq.read_metadata(shard).num_rows} rows, its marker says {marker.get('rows_out')}")
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=5, help="trials per command")
    ap.add_argument("--kills", type=int, default=2, help="SIGKILLs per trial before the final rerun")
    ap.add_argument("--commands", default=",".join(COMMANDS), help="comma-separated, of " + ", ".join(COMMANDS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--concurrent", type=int, default=0, help="also N trials of two writers into one --out")
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    args = ap.parse_args(argv)
    commands = [c for c in args.commands.split(",") if c]
    tmp = None if args.dir else tempfile.TemporaryDirectory(prefix="chaos-kill-")
    chaos = Chaos(args.dir or Path(tmp.name), seed=args.seed)
    trials: list[Trial] = []
    for c in commands:
        chaos.reference(c)
    print("reference runs: " + ", ".join(f"{c} {chaos.reference_seconds[c]:.1f} s" for c in commands)
          + f"; CLI start {chaos.startup_s:.1f} s", flush=True)
    for i in range(args.trials):
        for c in commands:
            t = chaos.trial(c, i, kills=args.kills)
            trials.append(t)
            print(t.line(), flush=True)
    killed = sum(1 for t in trials if t.kills)
    print(f"kill -9 trials: {killed}, rows lost: {sum(t.lost for t in trials)}, "
          f"rows duplicated: {sum(t.duplicated for t in trials)}, requests repeated: {sum(t.repeated for t in trials)} "
          f"(in flight at kill: {sum(t.in_flight for t in trials)}); kills: {sum(t.kills for t in trials)}, "
          f"rows changed: {sum(t.changed for t in trials)}, partial shards: {sum(len(t.partial) for t in trials)}, "
          f"reruns failed: {sum(1 for t in trials if t.error)}")
    bad_concurrent = 0
    if args.concurrent:
        locked = intact = 0
        for i in range(args.concurrent):
            c = commands[i % len(commands)]
            rc, ok, note = chaos.concurrent(c, i)
            locked += rc == 6
            intact += ok
            bad_concurrent += rc != 6 or not ok
            print(f"concurrent {c} trial {i}: second writer exited {rc}, first finished intact: {ok}"
                  + (f" ({note})" if note else ""), flush=True)
        print(f"concurrent-writer trials: {args.concurrent}, second exited 6: {locked}, first finished intact: {intact}")
    if tmp is not None:
        tmp.cleanup()
    return 0 if all(t.ok for t in trials) and not bad_concurrent else 1


if __name__ == "__main__":
    sys.exit(main())
