"""Building a teacher: backend -> limiter -> budget -> response cache, in this one place.

`TeacherFactory` is what a run context holds instead of a teacher: a plain
picklable recipe (the [teacher] section, workdir, run seed, and optionally a
shared limiter and budget), so a Ray worker builds its own teacher the same
way (pipeline/executors/teacher.py adds the cluster's limiter). The layers:

    backend   openai, llamacpp (embedded server children) or vllm
    limiter   the openai backend's: the section's rpm / tpm, or `limiter`
    budget    `BudgetedTeacher`, when a budget is given (the refresh's)
    cache     the SQLite response cache (`section.cache`), outside the budget:
              cache hits cost nothing. File: `section.cache_path`, else
              <workdir>/teacher_cache.sqlite
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import Teacher
from .budget import Budget, BudgetedTeacher
from .cache import CachedTeacher, ResponseCache
from .limits import Limiter

CACHE_FILE = "teacher_cache.sqlite"


def make_backend(section, *, seed: int = 0, workdir: Path | None = None, limiter: Limiter | None = None):
    """The bare backend named by `section.backend` (no budget, no cache); `workdir` holds the embedded
    server logs. Imported when built: only the configured backend's dependencies are loaded."""
    if section.backend == "openai":
        from .openai_backend import OpenAIBackend
        return OpenAIBackend(section, seed=seed, limiter=limiter)
    if section.backend == "llamacpp":
        from .embedded import EmbeddedTeacher
        return EmbeddedTeacher(section, seed=seed, workdir=workdir)
    if section.backend == "vllm":
        from .vllm_backend import VLLMBackend
        return VLLMBackend(section, seed=seed)
    raise ValueError(f"unknown teacher backend {section.backend!r}")


def cache_path(section, workdir: Path) -> Path:
    return Path(section.cache_path) if section.cache_path else Path(workdir) / CACHE_FILE


@dataclass(frozen=True)
class TeacherFactory:
    section: Any                 # config.TeacherSection
    workdir: Path
    seed: int
    limiter: Limiter | None = None  # replaces the section's rpm / tpm (the Ray cluster's permits)
    budget: Budget | None = None

    def backend(self):
        return make_backend(self.section, seed=self.seed, workdir=self.workdir, limiter=self.limiter)

    def build(self, backend: Any = None) -> Teacher:
        """The teacher around `backend` (default: a new one from the section); closes the
        backend if a layer cannot be built."""
        teacher = backend if backend is not None else self.backend()
        try:
            if self.budget is not None:
                teacher = BudgetedTeacher(teacher, self.budget, wave=self.section.concurrency)
            if self.section.cache:
                teacher = CachedTeacher(teacher, ResponseCache(cache_path(self.section, self.workdir)), self.seed)
        except BaseException:
            teacher.close()
            raise
        return teacher

    __call__ = build

    def with_limiter(self, limiter: Limiter | None) -> "TeacherFactory":
        return dataclasses.replace(self, limiter=limiter)

    def with_budget(self, budget: Budget | None) -> "TeacherFactory":
        return dataclasses.replace(self, budget=budget)

    def with_section(self, section: Any = None, **update: Any) -> "TeacherFactory":
        """Another section (score's judge teacher), or this one with `update`d fields."""
        section = section if section is not None else self.section
        return dataclasses.replace(self, section=section.model_copy(update=update) if update else section)
