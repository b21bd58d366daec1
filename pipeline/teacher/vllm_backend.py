"""The `vllm` backend: vLLM's in-process engine, for GPU boxes (`pip install 'distill[vllm]'`).

vllm is imported only when this backend is built, so the rest of the project
never needs it. One `chat()` call hands the whole list to `LLM.chat` with one
`SamplingParams` per request (each carries its per-request seed), which lets
vLLM batch them continuously; outputs come back in input order. Requests with
a raw `prompt` (base.completion_request) go to `LLM.generate` instead, as-is.

vLLM validates a batch as a whole (e.g. one prompt longer than the model's
context raises for the call). Then we run the requests one by one, so only
the bad request gets a typed error and the others still get answers.
"""

from __future__ import annotations

import threading
from typing import Any

from ..errors import TeacherUnavailable, import_extra
from .base import ChatRequest, Completion, OnDone, TeacherError, TeacherUsage, Usage, derive_seed
from .reasoning import split_think

INSTALL_HINT = "the vllm backend needs the vllm extra: pip install 'distill[vllm]' (GPU machines only)"


def _import_vllm():
    return import_extra("vllm", INSTALL_HINT)


class VLLMBackend:
    backend = "vllm"

    def __init__(self, section, *, seed: int = 0):
        vllm = _import_vllm()
        if not section.model:
            raise TeacherUnavailable("teacher.backend = 'vllm' needs teacher.model (a Hugging Face model name or local folder)")
        self._SamplingParams = vllm.SamplingParams
        self.model = section.model
        self.endpoint = section.model  # the model path or hub name the engine loaded
        self.run_seed = seed
        self.stats = TeacherUsage()
        self._lock = threading.Lock()  # one engine: overlapping shards' calls take turns
        args: dict[str, Any] = {"seed": seed, **section.vllm_args}
        try:
            self.llm = vllm.LLM(model=section.model, **args)
        except (ValueError, RuntimeError, OSError) as e:
            raise TeacherUnavailable(f"vLLM cannot load {section.model!r}: {e}") from None

    def __repr__(self) -> str:
        return f"VLLMBackend(model={self.model!r})"

    def _params(self, req: ChatRequest):
        s = req.sampling
        return self._SamplingParams(
            n=1, temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens,
            stop=list(s.stop) or None, presence_penalty=s.presence_penalty,
            frequency_penalty=s.frequency_penalty, logprobs=s.logprobs,
            seed=derive_seed(self.run_seed, req.record_id, req.purpose, req.sample_index))

    def chat(self, requests: list[ChatRequest], on_done: OnDone | None = None) -> list[Completion]:
        with self._lock:
            out = self._chat(requests)
        for i, c in enumerate(out if on_done is not None else ()):  # one engine batch: all final at once
            on_done(i, c)
        return out

    def _chat(self, requests: list[ChatRequest]) -> list[Completion]:
        if not requests:
            return []
        self.stats.requests += len(requests)
        try:
            outs = self._generate(requests)
        except (ValueError, TypeError) as batch_error:
            if len(requests) == 1:
                return [self._fail("bad_request", str(batch_error))]
            # Isolate the request(s) vLLM rejects; the rest still get answers.
            return [c for req in requests for c in self._one(req)]
        return [self._completion(o) for o in outs]

    def _one(self, req: ChatRequest) -> list[Completion]:
        try:
            return [self._completion(self._generate([req])[0])]
        except (ValueError, TypeError) as e:
            return [self._fail("bad_request", str(e))]

    def _generate(self, requests: list[ChatRequest]):
        self.stats.sent += len(requests)
        raw = [i for i, r in enumerate(requests) if r.prompt is not None]
        chats = [i for i, r in enumerate(requests) if r.prompt is None]
        outs: list[Any] = [None] * len(requests)
        if raw:
            got = self.llm.generate([requests[i].prompt for i in raw],
                                    sampling_params=[self._params(requests[i]) for i in raw], use_tqdm=False)
            for i, o in zip(raw, got):
                outs[i] = o
        if chats:
            got = self.llm.chat([list(requests[i].messages) for i in chats],
                                sampling_params=[self._params(requests[i]) for i in chats], use_tqdm=False)
            for i, o in zip(chats, got):
                outs[i] = o
        return outs

    def _fail(self, kind: str, message: str) -> Completion:
        self.stats.errors += 1
        self.stats.count_fault(kind)
        return Completion(text=None, error=TeacherError(kind, message[:500], 1, False), model=self.model)

    def _completion(self, out) -> Completion:
        o = out.outputs[0]
        usage = Usage(len(out.prompt_token_ids or ()), len(o.token_ids or ()))
        self.stats.prompt_tokens += usage.prompt_tokens
        self.stats.completion_tokens += usage.completion_tokens
        text, reasoning = split_think(o.text)  # the engine runs no reasoning parser: R1-style tags, if any
        return Completion(text=text, reasoning=reasoning, finish_reason=o.finish_reason, usage=usage,
                          logprobs=_logprobs(o), model=self.model)

    def close(self) -> None:
        self.llm = None


def _logprobs(o) -> list[dict[str, Any]] | None:
    """vLLM's per-position {token_id: Logprob} dicts, in the OpenAI chat `logprobs.content` shape."""
    if not o.logprobs:
        return None
    content = []
    for token_id, position in zip(o.token_ids, o.logprobs):
        chosen = position.get(token_id)
        top = sorted(position.values(), key=lambda lp: lp.rank if lp.rank is not None else 1 << 30)
        content.append({
            "token": chosen.decoded_token if chosen else None,
            "logprob": chosen.logprob if chosen else None,
            "top_logprobs": [{"token": lp.decoded_token, "logprob": lp.logprob} for lp in top],
        })
    return content
