"""The marginal-return curve of one `distill run` whose teacher runs out of new tasks, and the stop rule firing.

The teacher is tests/recombine_server.py, a loopback OpenAI-compatible stand-in run as a separate
process: its Self-Instruct tasks are a clause of one real Dolly instruction (../shared/data) joined to
a clause of another, drawn from a finite pool, so the share of new ones falls as the run goes on. The
pool is sized so that the expected novelty reaches `--min-novelty` at about `--target` rows generated
(novel per 1k ~ 1000 exp(-n / pool): pool = target / ln(1000 / min_novelty)); the run is asked for far
more instructions than that, so only the stop rule ends its generation.

It runs `distill run` (the CLI, in a subprocess) with [run] min_novelty, Self-Instruct, minhash,
scoring by the length heuristic (no teacher, no encoder), select and export (evol, orca and semdedup
skipped: they would answer or embed every row again and measure nothing here), then prints, per
shard of Self-Instruct: rows generated (every item the teacher wrote), novel rows per 1k (the novelty
monitor's figure, the one the stop reads), yield (kept / generated: the instructions Self-Instruct's
own filters and ROUGE-L accepted, per item generated), and the after-dedup curve's novelty of the
rows kept; then the stop line and the release.

    python scripts/bench_marginal.py [--target 20000] [--min-novelty 250] [--shard-tasks 250]

Exit 0 when the stop fired after at least --target rows generated and a release came out, else 1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import marginal  # noqa: E402


def config(base_url: str, work: Path, target: int, min_novelty: float, shard_tasks: int) -> str:
    return f"""
[run]
min_novelty = {min_novelty}

[teacher]
backend = "openai"
base_url = "{base_url}"
model = "standin-model"
concurrency = 32
cache_path = "{work / 'cache.sqlite'}"

[self_instruct]
num_instructions = {10 * target}
shard_tasks = {shard_tasks}
similar_top_k = 0

[self_instruct.instances]
max_instances = 2

[score]
judge = "heuristic"
heuristic = "length"

[select]
fast = true

[pipeline]
skip = ["evol_instruct", "orca", "semdedup"]
"""


def curve_table(run_dir: Path) -> list[str]:
    made = marginal.generation_curve(run_dir)
    after = {p["point"]: p for p in marginal.run_curve(run_dir)}
    manifest = json.loads((run_dir / "self_instruct" / "_manifest.json").read_text())
    accepted = {}
    for f in sorted((run_dir / "self_instruct" / "_done").glob("part-*.json")):
        m = json.loads(f.read_text())
        accepted[f"shard {m['shard']}"] = int(m.get("accepted_instructions", 0))
    lines = [f"{'point':>9} {'generated':>9} {'rows gen':>9} {'novel/1k':>8} {'yield':>6} {'kept rows':>9} "
             f"{'after-dedup novel/1k':>20}"]
    for p in made:
        a = after.get(p["point"], {})
        lines.append(f"{p['point']:>9} {p['generated']:>9,} {p['rows_generated']:>9,} {p['novel_per_1k']:>8.1f} "
                     f"{accepted.get(p['point'], 0) / p['generated']:>6.3f} {a.get('generated', 0):>9,} "
                     f"{a.get('novel_per_1k', float('nan')):>20.1f}")
    lines.append(marginal.sentence(made))
    lines.append(f"self_instruct: stop_reason {manifest['stop_reason']}; {manifest['accepted_instructions']:,} "
                 f"instructions accepted, {manifest['rows_out']:,} rows")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", type=int, default=20_000, help="rows generated the stop should come after")
    ap.add_argument("--min-novelty", type=float, default=250.0, help="[run] min_novelty")
    ap.add_argument("--shard-tasks", type=int, default=250, help="[self_instruct] shard_tasks (a point per shard)")
    ap.add_argument("--data", default=os.environ.get("DISTILL_SHARED_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--keep", default=None, help="write the run here (default: a temporary folder)")
    args = ap.parse_args(argv)
    pool = round(args.target / math.log(1000 / args.min_novelty))
    server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "recombine_server.py"), "--data", args.data,
                               "--pool", str(pool)], stdout=subprocess.PIPE, text=True)
    tmp = tempfile.TemporaryDirectory(prefix="bench-marginal-")
    work = Path(args.keep or tmp.name)
    try:
        port, distinct = server.stdout.readline().split()
        base_url = f"http://127.0.0.1:{port}/v1"
        print(f"teacher {base_url}: {int(distinct):,} distinct recombined Dolly tasks; target {args.target:,} rows "
              f"generated; [run] min_novelty = {args.min_novelty:g}", flush=True)
        work.mkdir(parents=True, exist_ok=True)
        (work / "bench.toml").write_text(config(base_url, work, args.target, args.min_novelty, args.shard_tasks))
        env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        t0 = time.monotonic()
        run = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "--config", str(work / "bench.toml"),
                              "--workdir", str(work / "runs"), "--run-id", "bench", "--no-progress"],
                             env=env, capture_output=True, text=True)
        wall = time.monotonic() - t0
        print("\n".join(line for line in (run.stdout + run.stderr).splitlines() if line.startswith("[")))
        if run.returncode != 0:
            print(f"distill run exited {run.returncode}:\n{run.stderr[-2000:]}")
            return 1
        run_dir = work / "runs" / "bench"
        print("\n".join(curve_table(run_dir)))
        summary = json.loads((run_dir / "run_summary.json").read_text())
        st = summary.get("stopped")
        print(f"stop: {st['message'] if st else 'the stop rule did not fire'}")
        print(f"release: {summary['final_rows']:,} rows in {summary['final_dataset']}; distill run took {wall:.0f} s")
        fired = bool(st) and st["reason"] == "min_novelty" and st["rows_generated"] >= args.target
        return 0 if fired and summary["final_rows"] > 0 and summary["final_dataset"].endswith("export") else 1
    finally:
        server.terminate()
        server.wait(10)
        tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
