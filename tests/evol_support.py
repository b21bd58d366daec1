"""Helpers for the Evol-Instruct tests: a scripted responder driven by markers in the instruction.

The responder is a pure function of the request, so an interrupted run and an
uninterrupted one get the same answers. Markers in an input instruction decide
how the teacher behaves for it (and, since evolutions append to their parent,
for its descendants):

  evolve step   [leak] [long] [same] [cut] [blank] [error] [cut-r1] (truncated in stage round 1 only)
  judge step    [equal] [unclear]
  answer step   [refuse] [degenerate] [anscut] [ansempty] [anserror]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import records
from pipeline.config import TeacherSection
from pipeline.store import DatasetWriter
from pipeline.teacher.base import ChatRequest, TeacherError
from pipeline.teacher.factory import TeacherFactory

GIVEN = re.compile(r"#Given Prompt#:\n(.*?)\n\n#(?:Rewritten|Created) Prompt#:", re.S)
ROUND = re.compile(r"round=(\d+)")


def evolve_reply(req: ChatRequest):
    user = req.messages[-1]["content"]
    parent = GIVEN.search(user).group(1)
    stage_round = int(ROUND.search(req.purpose).group(1))
    op = req.purpose.split(":")[2]
    if "[error]" in parent:
        return TeacherError("bad_request", "scripted HTTP 400", retryable=False)
    if "[leak]" in parent:
        return f"Here is the rewritten prompt: {parent} with one more rule."
    if "[long]" in parent:
        return parent + " filler" * 600
    if "[same]" in parent:
        return f"#Rewritten Prompt#:\n{parent}"
    if "[blank]" in parent:
        return "#Rewritten Prompt#:\n   "
    if "[cut]" in parent or ("[cut-r1]" in parent and stage_round == 1):
        return (f"{parent} and then", "length")
    return f"#Rewritten Prompt#: {parent} Step {stage_round} via {op}."


def judge_reply(req: ChatRequest):
    second = req.messages[-1]["content"].split("Second prompt:\n", 1)[1]
    if "[equal]" in second:
        return "Equal"
    if "[unclear]" in second:
        return "Maybe, it depends."
    return "Not Equal"


def answer_reply(req: ChatRequest):
    q = req.messages[-1]["content"]
    if "[anserror]" in q:
        return TeacherError("too_long", "scripted: over the context window", retryable=False)
    if "[ansempty]" in q:
        return "   "
    if "[anscut]" in q:
        return ("A long answer that never", "length")
    if "[refuse]" in q:
        return "Sorry, I cannot help with that request."
    if "[degenerate]" in q:
        return "It is what it is, and so on!"
    return f"A thorough answer to: {q[:60]} with concrete detail."


def responder(req: ChatRequest):
    if req.purpose.startswith("evol:evolve"):
        return evolve_reply(req)
    if req.purpose.startswith("evol:judge"):
        return judge_reply(req)
    if req.purpose == "evol:answer":
        return answer_reply(req)
    raise AssertionError(f"unexpected purpose {req.purpose!r}")


def make_input(path: Path, instructions: list[str], inputs: list[str] | None = None) -> Path:
    """A complete dataset folder of imported rows (round 0) with the given instructions."""
    inputs = inputs or [""] * len(instructions)
    rows = [records.new_row(i, x, f"original answer {k}", origin="import", run_id="test")
            for k, (i, x) in enumerate(zip(instructions, inputs))]
    w = DatasetWriter(path, "import")
    w.write_shard(0, rows)
    w.write_manifest()
    return path


@dataclass(frozen=True)
class WindowFactory(TeacherFactory):
    """The real teacher layers (breaker, length guard with the section's context window) around a
    scripted backend, so a stage sees the window it would see with a real teacher."""

    fake: Any = None

    def backend(self):
        return self.fake


def window_factory(fake: Any, context_tokens: int, workdir: Path) -> WindowFactory:
    sec = TeacherSection(backend="openai", base_url="http://127.0.0.1:9/v1", model="scripted",
                         context_tokens=context_tokens, cache=False)
    return WindowFactory(sec, workdir, 0, fake=fake)
