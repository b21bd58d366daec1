"""`distill refresh`: two nights on the embedded teacher over HTTP, and the control flow on a scripted one.

The two-night test is the real thing: the CLI as cron runs it, the llama.cpp
SmolLM2 server, MinHash and MiniLM. It checks that the second version holds
every row of the first plus only new ids, that `latest` moved in one step
(a reader polling it during the second night never sees a half release),
and that a third refresh started meanwhile exits 6 at once. The scripted
teacher (tests/self_instruct_support.py's world, which answers the same
whatever the seed) drives the other outcomes: nothing new (8), a budget that
runs out before anything (7) or part way (published, 0).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import date, datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from self_instruct_support import world

from pipeline.config import ConfigError, load_config
from pipeline.configdoc import reference_markdown
from pipeline.refresh.publish import latest, versions
from pipeline.refresh.run import night_seed, refresh
from pipeline.store import Dataset
from pipeline.teacher.base import ChatRequest, Sampling, TeacherError
from pipeline.teacher.budget import Budget, BudgetedTeacher
from pipeline.teacher.fake import FakeTeacher

# Tiny seed tasks with one short instance each: the first night publishes them (include_seeds), and
# every night evolves them anew under its own seed. SmolLM2-135M's evolutions often fail the leakage
# and truncation rules, so a dozen of them (plus a few Self-Instruct tasks) make a night with no new
# row very unlikely while a night stays a few thousand tokens.
SEEDS = [("Name a colour of the sky.", "Blue."), ("Give a synonym for happy.", "Glad."),
         ("Write a short greeting for a friend.", "Hi Sam, hope you are well!"),
         ("Name a fruit that is yellow.", "A banana."), ("Say what a cat likes to drink.", "Milk or water."),
         ("Add 2 and 3.", "5"), ("Name the capital of France.", "Paris."),
         ("Suggest a name for a pet goldfish.", "Bubbles."), ("Give an antonym for cold.", "Hot."),
         ("Describe the sea in three words.", "Vast, blue, restless."),
         ("Name a tool for cutting paper.", "Scissors."), ("Say how many legs a spider has.", "Eight.")]


def _real_config(tmp_path: Path, url: str) -> Path:
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"instruction": i, "instances": [{"input": "", "output": o}],
                                         "is_classification": False}) + "\n" for i, o in SEEDS))
    conf = tmp_path / "distill.toml"
    conf.write_text(f"""
[run]
workdir = "{tmp_path / 'work'}"
shard_rows = 50
[teacher]
backend = "openai"
base_url = "{url}"
model = "smollm2-135m-instruct"
concurrency = 2
[self_instruct]
seeds = "{seeds}"
include_seeds = true
num_instructions = 3
request_batch_size = 1
max_requests = 3
patience = 3
num_prompt_instructions = 3
num_machine_instructions = 0
last_item = 5
truncated = "drop_last"
bootstrap = {{temperature = 0.7, top_p = 0.9, presence_penalty = 2.0, max_tokens = 64}}
instances = {{max_tokens = 64, max_tokens_classification = 64, max_instances = 1}}
[evol_instruct]
rounds = 1
evolve_max_tokens = 64
answer_max_tokens = 40
judge_max_tokens = 4
drop_truncated_answers = false
[orca]
max_tokens = 40
truncated = "keep"
[score]
gates = ["empty", "echo", "refusal"]
judge = "heuristic"  # an openai teacher would get the rubric judge (judge = "auto"), which the 135M model cannot do
[refresh]
publish_dir = "{tmp_path / 'release'}"
""")
    return conf


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "refresh", "--no-progress", *args],
                          capture_output=True, text=True, **kw)


def _pool_ids(version: Path) -> list[str]:
    return Dataset(version / "pool").read(columns=["id"]).column("id").to_pylist()


def _train_ids(version: Path) -> list[str]:
    return [i for f in sorted(version.glob("train-*.parquet")) for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()]


def _summary(workdir: Path, run_id: str) -> dict:
    return json.loads((workdir / run_id / "refresh_summary.json").read_text())


class LatestReader(threading.Thread):
    """Polls <pub>/latest like a consumer: resolve once, then read that version's manifest, files and pool."""

    def __init__(self, pub: Path):
        super().__init__(daemon=True)
        self.pub, self.stop, self.seen, self.errors, self.reads = pub, threading.Event(), set(), [], 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                json.loads((self.pub / "latest" / "manifest.json").read_text())  # through the link itself
                d = Path(os.path.realpath(self.pub / "latest"))
                m = json.loads((d / "manifest.json").read_text())
                for f in m["files"]:
                    if (d / f["path"]).stat().st_size != f["bytes"]:
                        self.errors.append(f"{d.name}: {f['path']} has another size than its manifest says")
                pool = json.loads((d / "pool" / "_manifest.json").read_text())
                if pool["rows_out"] != m["rows"] or pool["version"] != d.name:
                    self.errors.append(f"{d.name}: pool and release disagree")
                self.seen.add(d.name)
                self.reads += 1
            except (OSError, ValueError, KeyError) as e:
                self.errors.append(f"{type(e).__name__}: {e}")
            time.sleep(0.02)


@pytest.mark.teacher
@pytest.mark.slow
def test_two_nights_on_the_embedded_teacher(teacher_server, tmp_path):
    conf = _real_config(tmp_path, teacher_server)
    work, pub = tmp_path / "work", tmp_path / "release"
    t0 = time.monotonic()
    first = _cli("-c", str(conf))
    assert first.returncode == 0, first.stderr
    v1 = latest(pub)
    ids1 = _pool_ids(v1)
    assert ids1 and len(set(ids1)) == len(ids1) and sorted(_train_ids(v1)) == sorted(ids1)
    t1 = time.monotonic()

    reader = LatestReader(pub)
    reader.start()
    second = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "refresh", "--no-progress", "-c", str(conf)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lock = pub / ".refresh.lock"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and second.poll() is None:
            holder = json.loads(lock.read_text() or "null") if lock.exists() else None
            if holder and holder.get("pid") == second.pid:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the second refresh never took the lock")
        ta = time.monotonic()
        third = _cli("-c", str(conf))
        third_s = time.monotonic() - ta
        assert third.returncode == 6, third.stderr
        errs = third.stderr.strip().splitlines()
        assert len(errs) == 1 and "another run holds the lock" in errs[0] and f"pid {second.pid}" in errs[0]
        out2, err2 = second.communicate(timeout=600)
    finally:
        if second.poll() is None:
            second.kill()
        reader.stop.set()
        reader.join(timeout=10)
    t2 = time.monotonic()
    assert second.returncode == 0, err2

    v2 = latest(pub)
    assert v2 != v1 and [v.name for v in versions(pub)] == [v1.name, v2.name]
    ids2 = _pool_ids(v2)
    new = [i for i in ids2 if i not in set(ids1)]
    assert set(ids1) <= set(ids2)                  # every row of v1 is still published
    assert new and len(ids2) == len(set(ids2))     # some new rows, no id twice
    assert ids2[:len(ids1)] == ids1                # v1's rows first, unchanged; tonight's appended
    assert sorted(_train_ids(v2)) == sorted(ids2)
    assert _pool_ids(v1) == ids1                   # the old version is untouched
    pool2 = json.loads((v2 / "pool" / "_manifest.json").read_text())
    assert [p["added_in"] for p in pool2["parts"]][-1] == v2.name and pool2["rows_added"] == len(new)
    card = (v2 / "README.md").read_text()   # the dataset card lists both nights
    assert "## Versions" in card and f"| {v1.name} | {len(ids1):,} |" in card and f"| {v2.name} | {len(new):,} |" in card

    # The reader saw the switch, and only whole versions.
    assert reader.errors == [] and reader.reads > 10 and {v1.name, v2.name} <= reader.seen

    runs = sorted(p.name for p in work.glob("refresh-*"))
    assert runs == [v1.name, v2.name]              # the locked-out third made no run folder
    s1, s2 = _summary(work, v1.name), _summary(work, v2.name)
    assert (s1["status"], s1["exit_code"], s1["version"]) == ("published", 0, v1.name)
    assert (s2["status"], s2["version"], s2["previous_version"]) == ("published", v2.name, v1.name)
    assert s2["rows"]["added"] == len(new) and s2["rows"]["pool_after"] == len(ids2)
    assert s1["seed"] != s2["seed"] and s2["tokens"]["total"] > 0
    # every generation stage's manifest reports its tokens where the report reads them
    from pipeline.report import build_report
    spent = {t["stage"]: t["prompt"] + t["completion"] for t in build_report(work / v1.name)["tokens"]}
    assert all(spent[s] > 0 for s in ("self_instruct", "evol_instruct", "orca")), spent
    stages2 = {s["stage"]: s for s in s2["stages"]}
    assert stages2["minhash"]["status"] == stages2["semdedup"]["status"] == "done"
    sem = json.loads((work / v2.name / "semdedup" / "_manifest.json").read_text())
    mh = json.loads((work / v2.name / "minhash" / "_manifest.json").read_text())
    assert sem["against"]["path"] == mh["against"][0] == str(v1 / "pool")
    # selection counted v1's rows as already selected; it embeds their whole conversations (the pool stores
    # semdedup's instruction + input vectors, another text), served by the embedding cache on later nights
    sel = json.loads((work / v2.name / "select" / "_manifest.json").read_text())
    assert sel["walk"]["against"] == {"dataset": str(v1 / "pool"), "rows": len(ids1), "vectors": "embedded"}
    print(f"\nnight 1 {t1 - t0:.1f}s ({len(ids1)} rows), night 2 {t2 - t1:.1f}s (+{len(new)} rows), "
          f"locked third exited in {third_s:.1f}s, reader made {reader.reads} reads")


# -- the scripted teacher: control flow ---------------------------------------------


def _answer(req: ChatRequest):
    return "ready" if req.purpose == "refresh:ping" else world(req)


def _fake_config(tmp_path: Path, **refresh_section):
    cfg = load_config(None, {"run": {"workdir": str(tmp_path / "w")}})
    cfg.self_instruct = {"num_instructions": 4, "request_batch_size": 1}
    cfg.pipeline = {"skip": ["evol_instruct", "orca"]}
    cfg.refresh = dict(refresh_section)
    return cfg


def _night(cfg, **kw):
    lines: list[str] = []
    return refresh(cfg, backend=FakeTeacher(_answer), progress=False, echo=lines.append, **kw), lines


def test_nothing_new_exits_8_and_leaves_latest(tmp_path):
    cfg = _fake_config(tmp_path)
    pub = tmp_path / "w" / "release"
    r1, _ = _night(cfg)
    assert (r1.status, r1.exit_code) == ("published", 0)
    v1 = latest(pub)
    rows1 = len(_pool_ids(v1))
    r2, _ = _night(cfg)   # the scripted world answers the same whatever the seed
    assert (r2.status, r2.exit_code, r2.version) == ("nothing_new", 8, None)
    assert latest(pub) == v1 and len(versions(pub)) == 1
    assert not list((pub / "versions").glob(".staging-*"))
    s = _summary(tmp_path / "w", r2.run_id)
    assert (s["status"], s["exit_code"], s["previous_version"]) == ("nothing_new", 8, v1.name)
    assert s["dropped"]["known_ids"]["id_already_published"] == rows1
    assert s["rows"]["generated"] > 0 and s["seed"] != _summary(tmp_path / "w", r1.run_id)["seed"]
    done = [st for st in s["stages"] if st["status"] == "done"]
    assert [st["stage"] for st in done] == ["self_instruct", "known_ids", "minhash", "semdedup"]
    assert all(isinstance(st["seconds"], float) and st["seconds"] >= 0 for st in done)


def test_budget_exhausted_before_anything_exits_7(tmp_path):
    cfg = _fake_config(tmp_path, max_tokens=1)
    r, _ = _night(cfg)
    assert (r.status, r.exit_code) == ("budget_exhausted", 7)
    assert latest(tmp_path / "w" / "release") is None
    s = _summary(tmp_path / "w", r.run_id)
    assert s["budget"]["exhausted_by"] == ["tokens"] and s["budget"]["requests_refused"] > 0
    assert s["rows"]["generated"] == 0 and s["dropped"]["self_instruct"]["teacher_error"] > 0


def test_on_ray_the_budget_is_one_shared_ledger(tmp_path, ray_cluster, monkeypatch):
    """With --executor ray the night's budget lives in a Ray actor and the workers' teacher factory
    draws on it (tests/test_ray_teacher.py shows workers stopping); here the driver's own stage does."""
    from pipeline.refresh import run as refresh_run
    seen = {}
    real = refresh_run.make_context

    def spy(*a, **kw):
        seen["ctx"] = real(*a, **kw)
        return seen["ctx"]
    monkeypatch.setattr(refresh_run, "make_context", spy)
    cfg = _fake_config(tmp_path, max_tokens=1)
    cfg.run.executor = "ray"
    r, _ = _night(cfg)
    assert (r.status, r.exit_code) == ("budget_exhausted", 7)
    budget = seen["ctx"].teacher_factory.budget
    assert isinstance(budget, Budget) and budget.shared
    s = _summary(tmp_path / "w", r.run_id)
    assert s["budget"]["exhausted_by"] == ["tokens"] and s["budget"]["requests_refused"] > 0
    # an unlimited night on Ray also counts through the ledger: the summary's tokens are everything sent
    cfg = _fake_config(tmp_path / "b")
    cfg.run.executor = "ray"
    r, _ = _night(cfg)
    s = _summary(tmp_path / "b" / "w", r.run_id)
    assert (r.status, r.exit_code) == ("published", 0) and s["tokens"]["total"] > 0
    assert s["tokens"]["total"] == s["budget"]["tokens_sent"] == sum(st.get("teacher_tokens", 0) for st in s["stages"])


def test_budget_cut_part_way_publishes_what_was_made(tmp_path):
    r, _ = _night(_fake_config(tmp_path), max_rows=2)
    assert (r.status, r.exit_code) == ("published", 0)
    s = r.summary
    assert s["budget"]["exhausted"] and s["budget"]["exhausted_by"] == ["rows"]
    assert 1 <= len(_pool_ids(latest(tmp_path / "w" / "release"))) <= 2
    assert "budget exhausted (rows)" in r.message


def test_stale_lock_is_taken_over_and_seed_flag_wins(tmp_path):
    pub = tmp_path / "w" / "release"
    pub.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom pipeline.store.lock import RunLock\n"
                               "RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)",
                               str(pub / ".refresh.lock")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    r, lines = _night(_fake_config(tmp_path), seed=1234)
    assert r.exit_code == 0 and any(f"took over the lock of pid {holder.pid}" in line for line in lines)
    assert (r.summary["seed"], r.summary["seed_source"]) == (1234, "--seed")


def test_second_refresh_exits_6_at_once(tmp_path):
    pub = tmp_path / "release"
    pub.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom pipeline.store.lock import RunLock\n"
                               "RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)",
                               str(pub / ".refresh.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        res = _cli("--workdir", str(tmp_path / "w"), "--publish-dir", str(pub), timeout=60)
    finally:
        holder.kill()
        holder.wait()
    assert res.returncode == 6
    assert res.stderr.strip().splitlines()[-1].startswith("error: ") and f"pid {holder.pid}" in res.stderr
    assert not (tmp_path / "w").exists() or not list((tmp_path / "w").glob("refresh-*"))


def test_unreachable_teacher_exits_4_with_a_summary(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]   # closed once the block ends: nothing listens there
    conf = tmp_path / "c.toml"
    conf.write_text(f"[run]\nworkdir = '{tmp_path / 'w'}'\n[teacher]\nbackend = 'openai'\n"
                    f"base_url = 'http://127.0.0.1:{port}/v1'\nmodel = 'm'\nmax_retries = 1\n")
    res = _cli("-c", str(conf), timeout=120)
    assert res.returncode == 4, res.stderr
    err = res.stderr.strip().splitlines()[-1]
    assert err.startswith("error: ") and "unreachable" in err
    [run] = list((tmp_path / "w").glob("refresh-*"))
    s = json.loads((run / "refresh_summary.json").read_text())
    assert (s["status"], s["exit_code"], s["version"]) == ("teacher_unavailable", 4, None)
    assert s["stages"] == [] and latest(tmp_path / "w" / "release") is None


def test_night_seed_changes_with_date_and_previous_version():
    d = date(2026, 11, 28)
    assert night_seed(0, d, "v1") == night_seed(0, d, "v1")      # a rerun of a failed night reuses it
    assert len({night_seed(0, d, "v1"), night_seed(0, date(2026, 11, 29), "v1"),
                night_seed(0, d, "v2"), night_seed(1, d, "v1"), night_seed(0, d, None)}) == 5


def test_budgeted_teacher_stops_at_its_limits():
    fake = FakeTeacher(lambda req: "one two three")
    clock = [0.0]
    b = Budget(max_tokens=30, max_seconds=10, clock=lambda: clock[0])
    t = BudgetedTeacher(fake, b, wave=2)
    req = ChatRequest(messages=[{"role": "user", "content": "a b"}], sampling=Sampling(max_tokens=4))
    out = t.chat([req] * 7)              # 5 tokens each: waves of 2 until 30 are spent
    assert [c.ok for c in out] == [True] * 6 + [False]
    assert out[-1].error.kind == "budget_exhausted" and b.tokens == 30 and b.hit == ["tokens"]
    assert len(fake.seen) == 6 and b.refused == 1
    b2 = Budget(max_seconds=10, clock=lambda: clock[0])
    t2 = BudgetedTeacher(FakeTeacher(lambda req: TeacherError("server_error", "x")), b2, wave=8)
    assert not t2.chat([req])[0].ok and b2.hit == []          # a teacher error is not the budget's
    clock[0] = 10.0
    assert t2.chat([req])[0].error.kind == "budget_exhausted" and b2.hit == ["seconds"]


def test_help_documents_exit_codes_and_config_reference(tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app
    res = CliRunner().invoke(app, ["refresh", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    for phrase in ("0 a new version was published", "8 nothing new", "7 budget exhausted", "6 locked",
                   "4 teacher unavailable", "3 data error"):
        assert phrase in text
    assert "### [refresh]" in reference_markdown() and "| `max_tokens` |" in reference_markdown()
    p = tmp_path / "c.toml"
    p.write_text("[refresh]\nkeep_versions = 2\nmax_rows = 5\n")
    assert load_config(p).refresh == {"keep_versions": 2, "max_rows": 5}
    p.write_text("[refresh]\nkeep_version = 2\n")
    cfg = load_config(p)
    with pytest.raises(ConfigError, match="keep_version"):
        refresh(cfg, backend=FakeTeacher(_answer), progress=False, echo=lambda s: None)


def test_run_ids_are_dated_and_unique(tmp_path):
    from pipeline.refresh.run import new_run_id
    now = datetime(2026, 11, 28, 2, 30, 0, tzinfo=timezone.utc)
    assert new_run_id(tmp_path, tmp_path / "pub", now) == "refresh-20261128-023000"
    (tmp_path / "refresh-20261128-023000").mkdir()
    assert new_run_id(tmp_path, tmp_path / "pub", now) == "refresh-20261128-023000-2"


@pytest.mark.parametrize("rc,expected", [(0, 0), (8, 0), (7, 7), (6, 6), (4, 4), (3, 3)])
def test_nightly_script_maps_exit_codes(tmp_path, rc, expected):
    """scripts/nightly.sh over a stand-in `distill` that records its arguments and exits with `rc`."""
    root = Path(__file__).resolve().parent.parent
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "nightly.sh"
    script.write_text((root / "scripts" / "nightly.sh").read_text())
    fake = tmp_path / ".venv" / "bin" / "distill"
    fake.parent.mkdir(parents=True)
    fake.write_text(f'#!/usr/bin/env bash\necho "$@" > "{tmp_path}/args"\nexit {rc}\n')
    fake.chmod(0o755)
    (tmp_path / "distill.toml").write_text("")
    res = subprocess.run(["bash", str(script), "--max-seconds", "60"], capture_output=True, text=True,
                         env={"PATH": os.environ["PATH"]})
    assert res.returncode == expected, res.stdout + res.stderr
    assert (tmp_path / "args").read_text().split() == [
        "refresh", "--no-progress", "--config", str(tmp_path / "distill.toml"), "--max-seconds", "60"]
    assert res.stdout.strip().splitlines()[-1].startswith("distill refresh: ")


def test_a_release_without_pool_is_a_data_error(tmp_path):
    from pipeline.errors import exit_code_for
    from pipeline.refresh.publish import publish, staging_dir
    from pipeline.store import DatasetError

    pub = tmp_path / "w" / "release"
    d = staging_dir(pub, "v0")
    (d / "manifest.json").write_text("{}")
    publish(pub, "v0", d)                       # a release made by hand, not by refresh
    with pytest.raises(DatasetError, match="no pool/") as e:
        _night(_fake_config(tmp_path))
    assert exit_code_for(e.value) == 3
    [run] = list((tmp_path / "w").glob("refresh-*"))
    s = json.loads((run / "refresh_summary.json").read_text())
    assert (s["status"], s["exit_code"]) == ("data_error", 3) and latest(pub).name == "v0"


def test_changed_minhash_settings_recompute_the_pool_signatures(tmp_path):
    cfg = _fake_config(tmp_path)
    r1, _ = _night(cfg)
    v1 = latest(tmp_path / "w" / "release")
    cfg.minhash = {"ngram": 3}          # stored signatures are 5-gram ones: not comparable any more
    r2, _ = _night(cfg)
    assert r2.exit_code == 8            # still deduplicated against v1, through recomputed signatures
    m = json.loads((tmp_path / "w" / r2.run_id / "minhash" / "_manifest.json").read_text())
    assert m["against"] == [str(tmp_path / "w" / r2.run_id / "minhash_against")] and m["against_rows"] == len(_pool_ids(v1))
    cfg.self_instruct = {"num_instructions": 6, "request_batch_size": 1, "schedule": "paper"}  # more tasks: some new
    r3, _ = _night(cfg)
    assert r3.exit_code == 0
    pool = json.loads((latest(tmp_path / "w" / "release") / "pool" / "_manifest.json").read_text())
    assert pool["minhash"]["format"]["ngram"] == 3 and pool["minhash"]["rows_computed"] == pool["rows_out"]


def test_report_on_a_refresh_run_and_on_the_release(tmp_path, monkeypatch):
    from pipeline.report import build_report

    cfg = _fake_config(tmp_path)
    r1, _ = _night(cfg)
    rep = build_report(tmp_path / "w" / r1.run_id)
    stages = [f["stage"] for f in rep["funnel"]]
    assert stages.index("self_instruct") < stages.index("known_ids") < stages.index("minhash")  # the night's order
    rel = build_report(tmp_path / "w" / "release")  # follows `latest`
    assert rel["kind"] == "release" and rel["funnel"][-1]["rows_out"] == len(_pool_ids(latest(tmp_path / "w" / "release")))


def test_heldout_count_is_refused_before_the_night_starts(tmp_path):
    """Refresh keeps held-out rows stable across versions, which needs a share: a count fails at once (exit 2)."""
    from pipeline.errors import ConfigError
    cfg = _fake_config(tmp_path)
    cfg.export = {"heldout": 5}
    with pytest.raises(ConfigError, match="give heldout as a share"):
        _night(cfg)
    assert not list((tmp_path / "w").glob("refresh-*"))   # no run folder, nothing generated
