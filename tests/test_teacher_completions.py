"""Text-completion requests (base.completion_request) in the backends: where each request goes.

The openai path runs for real against loopback servers in tests/test_score_deita.py
(and against llama.cpp there, marked `teacher`). vLLM needs a GPU, so its routing is
checked here on an engine stand-in with vLLM's `generate` / `chat` signatures and
output objects; tests/test_teacher_vllm.py runs the real engine where vllm imports.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

from pipeline.teacher.base import ChatRequest, Sampling, TeacherUsage, completion_request
from pipeline.teacher.openai_backend import legacy_logprobs
from pipeline.teacher.vllm_backend import VLLMBackend


class EngineStandIn:
    """vLLM's LLM: `generate(prompts, ...)` for raw prompts, `chat(conversations, ...)` for chats."""

    def __init__(self):
        self.calls = []

    def _out(self, text):
        lp = SimpleNamespace(decoded_token="5", logprob=-0.1, rank=1)
        return SimpleNamespace(prompt_token_ids=[1, 2, 3], outputs=[SimpleNamespace(
            text=text, token_ids=[7], logprobs=[{7: lp}], finish_reason="length")])

    def generate(self, prompts, sampling_params, use_tqdm):
        self.calls.append(("generate", list(prompts)))
        return [self._out("gen:" + p) for p in prompts]

    def chat(self, conversations, sampling_params, use_tqdm):
        self.calls.append(("chat", [c[-1]["content"] for c in conversations]))
        return [self._out("chat:" + c[-1]["content"]) for c in conversations]


def test_vllm_sends_raw_prompts_to_generate_and_chats_to_chat_in_request_order():
    b = VLLMBackend.__new__(VLLMBackend)
    b.model, b.endpoint, b.run_seed, b.stats = "m", "m", 0, TeacherUsage()
    b._SamplingParams = lambda **kw: kw
    b._lock = threading.Lock()
    b.llm = EngineStandIn()
    s = Sampling(temperature=0.0, max_tokens=1, logprobs=20)
    reqs = [completion_request("##Query: a  \n##Complexity: ", s, "a", "deita:complexity"),
            ChatRequest(messages=[{"role": "user", "content": "b"}], sampling=s, record_id="b"),
            completion_request("##Query: c  \n##Complexity: ", s, "c", "deita:complexity")]
    out = b.chat(reqs)
    assert [c.text for c in out] == ["gen:##Query: a  \n##Complexity: ", "chat:b", "gen:##Query: c  \n##Complexity: "]
    assert b.llm.calls == [("generate", ["##Query: a  \n##Complexity: ", "##Query: c  \n##Complexity: "]),
                           ("chat", ["b"])]
    assert out[0].logprobs == [{"token": "5", "logprob": -0.1, "top_logprobs": [{"token": "5", "logprob": -0.1}]}]


def test_legacy_completion_logprobs_become_the_chat_shape():
    lp = {"tokens": ["4", "\n"], "token_logprobs": [-0.3, -1.0], "text_offset": [10, 11],
          "top_logprobs": [{"4": -0.3, "5": -1.6}, None]}
    assert legacy_logprobs(lp) == [
        {"token": "4", "logprob": -0.3, "top_logprobs": [{"token": "4", "logprob": -0.3}, {"token": "5", "logprob": -1.6}]},
        {"token": "\n", "logprob": -1.0, "top_logprobs": []}]
    assert legacy_logprobs(None) is None
