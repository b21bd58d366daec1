"""A scripted teacher for Self-Instruct control-flow tests (used in-process and by the kill test's child).

Every answer is a pure function of the request, so two runs (or a killed run
and its resume) see the same answers, as they would through the response cache.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
from pathlib import Path

from pipeline.context import RunContext
from pipeline.teacher.base import ChatRequest
from pipeline.teacher.fake import FakeTeacher

NOUNS = ("harbour lantern orchard meadow violin glacier compass teapot canyon ferry quilt beacon "
         "sparrow marble lighthouse bakery tunnel puzzle ladder rocket").split()
VERBS = "Describe Compare Summarize Explain Critique Outline Rank Plan Praise Question".split()


def h(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16)


def novel_instruction(key: str) -> str:
    """A distinctive instruction: each draws its own rare words, so they rarely collide.
    Item 6 of every reply starts with "Rank", which the scripted world calls classification."""
    x = h(key)
    words = [f"{NOUNS[(x >> (4 * i)) % len(NOUNS)]}{(x >> (3 * i)) % 97}" for i in range(4)]
    verb = VERBS[int(key.rsplit(":", 1)[1]) % len(VERBS)] if ":" in key else VERBS[x % len(VERBS)]
    return f"{verb} the {words[0]} and the {words[1]} near {words[2]} {words[3]}"


def bootstrap_reply(req: ChatRequest) -> str:
    items = [novel_instruction(f"{req.record_id}:{i}") for i in range(7)]
    return "9. " + "\n".join(f"{9 + i}. {t}" if i else t for i, t in enumerate(items))


def instruction_of(req: ChatRequest) -> str:
    return req.messages[-1]["content"].rsplit("Task: ", 1)[1].split("\n")[0]


def world(req: ChatRequest):
    if req.purpose.endswith("bootstrap"):
        return bootstrap_reply(req)
    ins = instruction_of(req)
    if req.purpose.endswith("classify"):
        return "Yes" if "Rank" in ins else "No"
    if "Class label:" in req.messages[-1]["content"]:   # the output-first template
        return f"Class label: High\nItem: {ins[:20]} one\nClass label: Low\nItem: {ins[:20]} two"
    return f"Example 1\nInput: first {h(ins) % 1000}\nOutput: answer one\nExample 2\nInput: second\nOutput: answer two"


def make_ctx(responder=world, seed: int = 0) -> tuple[RunContext, FakeTeacher]:
    fake = FakeTeacher(responder)
    return RunContext(run_id="test-run", seed=seed, teacher_factory=lambda: fake, progress=False), fake


def _child(out: str, kill_at: str, schedule: str = "window") -> None:
    """Run the stage and SIGKILL this process when the bootstrap request `kill_at` arrives."""
    from pipeline.stages.self_instruct import run_self_instruct

    def responder(req: ChatRequest):
        if req.record_id == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return world(req)

    ctx, _ = make_ctx(responder)
    run_self_instruct(out, ctx, kill_config(schedule))


def kill_config(schedule: str = "window"):
    from pipeline.stages.self_instruct import SelfInstructConfig
    return SelfInstructConfig(num_instructions=16, request_batch_size=1, shard_tasks=4, schedule=schedule)


# the third bootstrap request's id under each schedule
THIRD_REQUEST = {"paper": "batch000002-0", "window": "request0000002"}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    _child(*sys.argv[1:4])
