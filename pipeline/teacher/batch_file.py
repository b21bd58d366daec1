"""Batch files for an offline GPU box (backend `batch_file`): vLLM `run-batch` input out, its output back in.

Nothing is sent anywhere. A batch is its input file in the journal folder,
`<batch_dir>/<key>.input.jsonl` (OpenAI batch lines, batch_format.py), which
you run elsewhere with

    vllm run-batch -i <key>.input.jsonl -o <key>.output.jsonl --model <teacher.model>

and copy the output back next to it as `<key>.output.jsonl`. A batch has ended
once its output holds a line for every input line, or once a file
`<key>.done` says the output is all there is (lines missing then are asked
again in a new file, up to teacher.batch_retries). Cancel writes `<key>.done`.
Reads the output files; writes the `.done` marker on cancel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import ChatRequest
from .batch_format import BatchState, LineResult, chat_body, openai_line, parse_openai_output

MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024


class FileBatchProvider:
    name = "batch_file"
    overhead = 0

    def __init__(self, section: Any, folder: Path):
        self.folder = Path(folder)
        self.endpoint = f"file:{section.model}"
        self.model = section.model
        self.max_requests = section.batch_max_requests or MAX_REQUESTS
        self.max_bytes = section.batch_max_bytes or MAX_BYTES

    def __repr__(self) -> str:
        return f"FileBatchProvider({str(self.folder)!r})"

    def line(self, custom_id: str, model: str, req: ChatRequest, seed: int) -> bytes:
        return openai_line(custom_id, chat_body(model, req, seed))

    def command(self, batch_id: str) -> str:
        return (f"vllm run-batch -i {self.folder / f'{batch_id}.input.jsonl'} "
                f"-o {self.folder / f'{batch_id}.output.jsonl'} --model {self.model}")

    def create(self, key: str, path: Path) -> str:
        return key  # the input file is the batch

    def find(self, key: str, since: float, count: int, known: set[str]) -> str | None:
        return key if (self.folder / f"{key}.input.jsonl").exists() else None

    def status(self, batch_id: str) -> BatchState:
        out = self.folder / f"{batch_id}.output.jsonl"
        wanted = sum(1 for ln in (self.folder / f"{batch_id}.input.jsonl").read_bytes().split(b"\n") if ln.strip())
        got = sum(1 for _ in parse_openai_output(out.read_bytes())) if out.exists() else 0
        done = (self.folder / f"{batch_id}.done").exists()
        status = "completed" if got >= wanted or (done and out.exists()) else ("cancelled" if done else "waiting")
        return BatchState(status, ended=status != "waiting", counts={"total": wanted, "completed": got},
                          unprocessed="canceled" if status == "cancelled" else "expired",
                          detail=f"run: {self.command(batch_id)}", raw={"id": batch_id})

    def results(self, st: BatchState) -> list[LineResult]:
        out = self.folder / f"{(st.raw or {})['id']}.output.jsonl"
        return list(parse_openai_output(out.read_bytes())) if out.exists() else []

    def cancel(self, batch_id: str) -> BatchState:
        (self.folder / f"{batch_id}.done").touch()
        return self.status(batch_id)
