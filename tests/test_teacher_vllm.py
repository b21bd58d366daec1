"""The vllm backend: a one-line install hint without the extra; a real generation where vllm imports."""

from __future__ import annotations

import importlib.util

import pytest

from pipeline.config import TeacherSection
from pipeline.errors import MissingExtra
from pipeline.teacher import TeacherFactory
from pipeline.teacher.base import ChatRequest, Sampling

HAVE_VLLM = importlib.util.find_spec("vllm") is not None


def test_missing_extra_is_one_line_with_install_hint(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_vllm(name, *args, **kwargs):
        if name == "vllm" or name.startswith("vllm."):
            raise ImportError("No module named 'vllm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_vllm)
    with pytest.raises(MissingExtra) as e:
        TeacherFactory(TeacherSection(backend="vllm", model="HuggingFaceTB/SmolLM2-135M-Instruct"),
                       tmp_path, 0).build()
    msg = str(e.value)
    assert "\n" not in msg and "pip install 'distill[vllm]'" in msg
    assert not (tmp_path / "teacher_cache.sqlite").exists()


@pytest.mark.skipif(not HAVE_VLLM, reason="vllm is not installed (pip install 'distill[vllm]' on a GPU machine)")
def test_vllm_generates_in_order_with_seeds(tmp_path):
    import os
    model = os.environ.get("DISTILL_VLLM_MODEL", "HuggingFaceTB/SmolLM2-135M-Instruct")
    sec = TeacherSection(backend="vllm", model=model, cache=False,
                         vllm_args={"gpu_memory_utilization": 0.3, "max_model_len": 512})
    t = TeacherFactory(sec, tmp_path, 1).build()
    s = Sampling(temperature=0.9, max_tokens=12, logprobs=2)
    reqs = [ChatRequest(messages=[{"role": "user", "content": q}], sampling=s, record_id=q, purpose="t")
            for q in ("Name a fruit.", "Name a colour.", "Name a fruit.", "word " * 2000)]
    try:
        out = t.chat(reqs)
    finally:
        t.close()
    assert all(c.ok and c.text for c in out[:3])
    assert out[0].text == out[2].text
    assert out[0].logprobs and len(out[0].logprobs[0]["top_logprobs"]) >= 2
    assert out[3].error is not None and out[3].error.kind == "bad_request"
