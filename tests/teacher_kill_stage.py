"""A test-only per-shard stage, run as a subprocess by test_teacher_kill.py.

Each row asks the teacher once (one `chat()` per row, so every answer is in
the cache before the next request goes out) and keeps the answer as output.

    python tests/teacher_kill_stage.py INPUT OUT WORKDIR BASE_URL [CONCURRENCY]
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.config import TeacherSection
from pipeline.context import RunContext
from pipeline.runner import ShardResult, run_shards
from pipeline.store import Dataset
from pipeline.teacher import TeacherFactory
from pipeline.teacher.base import ChatRequest, Sampling

SHARD_ROWS = 5


class AskOnce:
    name = "ask_once"

    def settings(self):
        return {"purpose": "answer"}

    def process(self, rows, ctx):
        kept = []
        for row in rows:
            [c] = ctx.teacher.chat([ChatRequest(
                messages=[{"role": "user", "content": row["instruction"]}], sampling=Sampling(max_tokens=8),
                record_id=row["id"], purpose="answer")])
            if not c.ok:
                raise RuntimeError(f"teacher error for {row['id']}: {c.error}")
            kept.append(dict(row, output=c.text, finish_reason=c.finish_reason))
        return ShardResult(kept=kept)


def main(src: str, out: str, workdir: str, base_url: str, concurrency: str = "1") -> None:
    wd = Path(workdir)
    sec = TeacherSection(backend="openai", base_url=base_url, model="fault-model", concurrency=int(concurrency))
    ctx = RunContext(run_id="kill", seed=7, workdir=wd, progress=False,
                       teacher_factory=TeacherFactory(sec, wd, 7))
    try:
        run_shards(AskOnce(), Dataset(src), out, ctx, shard_rows=SHARD_ROWS)
    finally:
        ctx.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
