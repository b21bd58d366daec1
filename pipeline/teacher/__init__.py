"""The teacher layer: protocol, backends (openai, llamacpp, vllm), response cache.

`make_teacher(section, workdir=..., seed=...)` builds the configured backend
wrapped in the SQLite response cache. The `llamacpp` backend is the embedded
model in supervised server children (embedded.py) driven by the `openai`
client, so every teacher but in-process vLLM goes through one client path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .base import (
    ChatRequest,
    Completion,
    Sampling,
    Teacher,
    TeacherError,
    TeacherStats,
    Usage,
)

__all__ = ["ChatRequest", "Completion", "Sampling", "Teacher", "TeacherError", "TeacherStats", "Usage",
           "make_backend", "make_teacher", "cache_path"]

CACHE_FILE = "teacher_cache.sqlite"


def make_backend(section, *, seed: int = 0, workdir: Path | None = None):
    """The bare backend named by `section.backend` (no cache); `workdir` holds the embedded server logs."""
    if section.backend == "openai":
        from .openai_backend import OpenAIBackend
        return OpenAIBackend(section, seed=seed)
    if section.backend == "llamacpp":
        from .embedded import EmbeddedTeacher
        return EmbeddedTeacher(section, seed=seed, workdir=workdir)
    if section.backend == "vllm":
        from .vllm_backend import VLLMBackend
        return VLLMBackend(section, seed=seed)
    raise ValueError(f"unknown teacher backend {section.backend!r}")


def cache_path(section, workdir: Path) -> Path:
    return Path(section.cache_path) if section.cache_path else Path(workdir) / CACHE_FILE


def make_teacher(section, *, workdir: Path, seed: int, wrap: Callable[[Teacher], Teacher] | None = None) -> Teacher:
    """The configured backend (passed through `wrap` when given), in the response cache when `section.cache`."""
    backend = make_backend(section, seed=seed, workdir=workdir)
    return with_cache(wrap(backend) if wrap is not None else backend, section, workdir=workdir, seed=seed)


def with_cache(backend: Teacher, section, *, workdir: Path, seed: int) -> Teacher:
    """`backend` wrapped in the response cache when `section.cache` (closing it if the cache cannot open)."""
    if not section.cache:
        return backend
    from .cache import CachedTeacher, ResponseCache
    try:
        cache = ResponseCache(cache_path(section, workdir))
    except BaseException:
        backend.close()
        raise
    return CachedTeacher(backend, cache, seed)
