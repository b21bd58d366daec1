"""The teacher layer: protocol, backends (openai, llamacpp, vllm), limits, budget, response cache.

`TeacherFactory(section, workdir, seed).build()` (factory.py) builds the
configured backend inside its budget and the SQLite response cache. The
`llamacpp` backend is the embedded model in supervised server children
(embedded.py) driven by the `openai` client, so every teacher but in-process
vLLM goes through one client path.
"""

from __future__ import annotations

from .factory import TeacherFactory, cache_path, make_backend

__all__ = ["TeacherFactory", "cache_path", "make_backend"]
