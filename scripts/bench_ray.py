"""Local vs Ray executor on MinHash, side by side on this machine: the Ray overhead ratio.

    flock /tmp/distill-heavy.lock python scripts/bench_ray.py                 # 1M rows
    python scripts/bench_ray.py --rows 100000 --workers 2

Builds (once, under --workdir) a real-derived corpus with known near-duplicates
(scripts/minhash_corpus.py: rows made of ../shared/data words and sentences),
then deduplicates it twice with the same [minhash] settings: the local
executor (`run_minhash`, --workers processes) and the Ray executor
(`run_minhash(..., executor=RayExecutor())`: the same phase functions as Ray tasks on a local Ray
cluster with --workers CPUs). Both runs are checked to give the same output.
A small warm-up run of each first fills numba's on-disk kernel cache, so
neither side pays compilation. Prints wall seconds, rows/s and the ratio
Ray / local (target: <= 1.5 on one node), with and without Ray's start-up
(a real cluster is already up when a stage starts).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def _corpus(workdir: Path, rows: int, shared: Path) -> Path:
    from minhash_corpus import build
    path = workdir / f"corpus-{rows}"
    if not (path / "_manifest.json").exists():
        shutil.rmtree(path, ignore_errors=True)
        t0 = time.perf_counter()
        build(rows, path, shared)
        print(f"built {rows} rows in {time.perf_counter() - t0:.1f}s -> {path}", flush=True)
    return path


def _same(a: Path, b: Path) -> bool:
    from pipeline.store import Dataset
    da, db = Dataset(a, require_complete=True), Dataset(b, require_complete=True)
    return (da.read(columns=["id", "minhash_cluster"]).equals(db.read(columns=["id", "minhash_cluster"]))
            and da.rejected().read(columns=["id", "drop_reason"]).equals(db.rejected().read(columns=["id", "drop_reason"])))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=2, help="local processes = Ray CPUs")
    ap.add_argument("--shard-rows", type=int, default=100_000, help="[minhash] shard_rows (block size)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/distill-bench-ray"))
    ap.add_argument("--shared", type=Path, default=HERE.parent.parent / "shared" / "data")
    args = ap.parse_args()

    import ray

    from pipeline.executors.ray_executor import RayExecutor
    from pipeline.stages.minhash import MinhashConfig, run_minhash

    args.workdir.mkdir(parents=True, exist_ok=True)
    corpus = _corpus(args.workdir, args.rows, args.shared)
    warm = _corpus(args.workdir, 20_000, args.shared)
    cfg = MinhashConfig(workers=args.workers, shard_rows=args.shard_rows)
    warm_cfg = cfg.model_copy(update={"shard_rows": 5_000})
    out = args.workdir / "out"
    shutil.rmtree(out, ignore_errors=True)

    t0 = time.perf_counter()
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - t0
    run_minhash(warm, out / "warm-local", warm_cfg, progress=False)
    run_minhash(warm, out / "warm-ray", warm_cfg, progress=False, executor=RayExecutor())

    t0 = time.perf_counter()
    ml = run_minhash(corpus, out / "local", cfg, progress=False)
    local_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    mr = run_minhash(corpus, out / "ray", cfg, progress=False, executor=RayExecutor())
    ray_s = time.perf_counter() - t0
    same = _same(out / "local", out / "ray")
    ray.shutdown()

    n = ml["rows_in"]
    print(f"\nMinHash dedup of {n} rows, {args.workers} workers, blocks of {args.shard_rows} rows "
          f"({ml['rows_rejected']} near-duplicates removed; Ray output identical: {same})")
    print(f"{'executor':<28}{'seconds':>10}{'rows/s':>12}{'vs local':>10}")
    print(f"{'local (processes)':<28}{local_s:>10.1f}{n / local_s:>12.0f}{1.0:>10.2f}")
    print(f"{'ray (cluster already up)':<28}{ray_s:>10.1f}{n / ray_s:>12.0f}{ray_s / local_s:>10.2f}")
    print(f"{'ray (+ starting Ray)':<28}{ray_s + ray_start:>10.1f}{n / (ray_s + ray_start):>12.0f}"
          f"{(ray_s + ray_start) / local_s:>10.2f}")
    phases = ", ".join(f"{k} {ml['phase_seconds'][k]:.1f}/{mr['phase_seconds'][k]:.1f}" for k in ml["phase_seconds"])
    print(f"phase seconds local/ray: {phases}")
    if not same or mr["rows_out"] != ml["rows_out"]:
        sys.exit("Ray and local outputs differ")


if __name__ == "__main__":
    main()
