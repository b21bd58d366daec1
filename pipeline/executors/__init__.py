"""Where shards run: `local` (this process, `runner.run_shards`) or `ray` (a Ray cluster).

The Ray executor runs the *same* stage objects over the *same* shards: shard k
is the same rows as locally, its kept/rejected files are written by the task
under hidden temporary names, and the driver renames them into place and
writes the done marker, so resume, manifests and atomic writes behave exactly
as with the local executor (a folder started locally can be finished on Ray
and the other way round). Modules:

    ray_runtime.py   importing Ray (a one-line install hint without it), connecting
    storage.py       local paths and pyarrow filesystems (s3://, file://): atomic writes, datasets
    folders.py       workers stage a shard's files, the driver commits them and writes the marker
    shards.py        shard plans as (file, row range) pieces that a worker reads itself
    ray_shards.py    the per-shard driver: actors, retries of dead workers, commits, manifest
    limits.py        one cluster-wide concurrency / rpm / tpm limiter for the openai backend
    teacher.py       the limited openai backend for workers, and the vLLM replica placement
    ray_dedup.py     MinHash's per-block and per-band phases, semdedup's embed chunks, as Ray tasks (RayPool)

README.md here is the scaling section (Ray launch, overhead, the 10M-row estimate).
Steps that stay in the driver with `ray` are listed in LOCAL_ONLY, with the reason
`distill run` prints.
"""

from __future__ import annotations

EXECUTORS = ("local", "ray")

# Steps of `distill run` that run in the driver process even with `--executor ray`,
# and why; `runplan` says so when it starts each one (no silent fallback).
LOCAL_ONLY = {
    "self_instruct": "its bootstrap loop is sequential: every batch is built from the pool the previous one grew",
    "select": "one global walk over the scores (its embeddings come from semdedup's cache)",
    "export": "one pass that writes the release folder",
}
