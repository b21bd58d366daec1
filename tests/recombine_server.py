"""A loopback OpenAI-compatible stand-in teacher whose Self-Instruct tasks are real instructions recombined.

Used by scripts/bench_marginal.py (as a separate process: `python tests/recombine_server.py --data DIR
--pool N` prints its port) and its test. Reads `dolly_3k.json` from the shared data folder (its README:
human-written Dolly rows) once at start; writes nothing.

The pool: the first half (by words) of `a` Dolly instructions and the second half of `a` others,
a = round(sqrt(N)), so about N distinct tasks "<head of one> <tail of another>". Every bootstrap reply
holds 7 tasks, each a head and a tail drawn uniformly (an rng seeded by the prompt and the request's
seed, so a reply is a pure function of the request, as a real teacher's and the response cache's
are). A draw repeats an earlier one with a probability that grows as the pool is used up: after n
draws about 1 - exp(-n / N) of them, so novelty per 1k generated falls like 1000 exp(-n / N).
Classification questions get "No"; instance requests two examples made from the task's words. No
latency: it answers as fast as it can.
"""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

from loopback_main import serve_forever
from self_instruct_server import MODEL, StandIn, digest, kind


def clauses(data: Path, pool: int) -> tuple[list[str], list[str]]:
    """Heads and tails of distinct Dolly instructions of 6 to 30 words (about `pool` pairs)."""
    rows = json.loads((data / "dolly_3k.json").read_text(encoding="utf-8"))
    texts = list(dict.fromkeys(" ".join(r["instruction"].split()) for r in rows))
    texts = [t for t in texts if 6 <= len(t.split()) <= 30]
    a = max(2, round(math.sqrt(pool)))
    if 2 * a > len(texts):
        raise SystemExit(f"--pool {pool}: at most {(len(texts) // 2) ** 2} (two clauses from each of "
                         f"{len(texts)} instructions)")
    heads = [" ".join(t.split()[:len(t.split()) // 2]) for t in texts[:a]]
    tails = [" ".join(t.split()[len(t.split()) // 2:]) for t in texts[a:2 * a]]
    return heads, tails


class Recombiner(StandIn):
    def __init__(self, heads: list[str], tails: list[str]):
        super().__init__(latency=0.0)
        self.heads, self.tails = heads, tails

    def answer(self, body: dict) -> str:
        content = body["messages"][-1]["content"]
        rng = random.Random(digest(content, body.get("seed")))
        k = kind(body)
        if k == "bootstrap":
            nxt = int(content.rstrip().rsplit("\n", 1)[1].rstrip("."))
            items = [f"{rng.choice(self.heads)} {rng.choice(self.tails)}" for _ in range(7)]
            return items[0] + "".join(f"\n{nxt + i}. {t}" for i, t in enumerate(items[1:], 1))
        if k == "classify":
            return "No"
        if "Task: " not in content:   # the run's ping
            return "ready"
        task = content.rsplit("Task: ", 1)[1].split("\n")[0].split()
        pick = lambda: " ".join(rng.choice(task) for _ in range(6))  # noqa: E731
        return f"Example 1\nInput: {pick()}\nOutput: {pick()}\nExample 2\nInput: {pick()}\nOutput: {pick()}"

    async def _complete(self, body: dict) -> dict:
        k = kind(body)
        self.requests += 1
        self.kinds[k] += 1
        text = self.answer(body)
        self.kinds[k] -= 1
        n = len(text.split())
        return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": MODEL,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 50, "completion_tokens": n, "total_tokens": 50 + n}}


def main(argv: list[str]) -> None:
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="the shared data folder (dolly_3k.json)")
    ap.add_argument("--pool", type=int, required=True, help="about this many distinct tasks")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)

    serve_forever(lambda: Recombiner(*clauses(Path(args.data), args.pool)), args.port,
                  lambda s: (len(s.heads) * len(s.tails),))


if __name__ == "__main__":
    main(sys.argv[1:])
