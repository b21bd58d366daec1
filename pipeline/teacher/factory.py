"""Building a teacher: backend -> breaker -> length guard -> budget -> response cache, in this one place.

`TeacherFactory` is what a run context holds instead of a teacher: a plain
picklable recipe (the [teacher] section, workdir, run seed, and optionally a
shared limiter and budget), so a Ray worker builds its own teacher the same
way (pipeline/executors/teacher.py adds the cluster's limiter). The layers:

    backend   openai, llamacpp (embedded server children) or vllm; or a batch API
              (batch_backend.py: openai_batch, anthropic_batch, batch_file)
    limiter   the openai backend's: the section's rpm / tpm, or `limiter`
    breaker   `BreakerTeacher` (breaker.py): stops the stage with exit 4 when the
              teacher keeps failing (section.breaker_consecutive / breaker_rate /
              breaker_window)
    guard     `LengthGuard` (guard.py): a request over the context window
              (`context_tokens`) is never sent
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
from .breaker import Breaker, BreakerTeacher
from .budget import BatchReservations, Budget, BudgetedTeacher
from .cache import CachedTeacher, ResponseCache
from .guard import LengthGuard
from .limits import Limiter

CACHE_FILE = "teacher_cache.sqlite"
BATCH_DIR = "teacher_batches"
BATCH_BACKENDS = ("openai_batch", "anthropic_batch", "batch_file")
# backends whose chat() may be called from several threads at once (one event loop, shared request slots):
# not vLLM's one in-process engine, and not a batch teacher (one journal, its calls wait for their batches)
CONCURRENT_BACKENDS = ("openai", "llamacpp")
# A network teacher's context window when teacher.context_tokens is not set: the largest common one, so only
# a request no server would take is refused unsent (set it to your model's window).
DEFAULT_CONTEXT_TOKENS = 131072


def context_tokens(section) -> int:
    """The teacher's context window in tokens: teacher.context_tokens, else n_ctx for the embedded
    model, vllm_args' max_model_len for vLLM, DEFAULT_CONTEXT_TOKENS otherwise."""
    if section.context_tokens is not None:
        return section.context_tokens
    if section.backend == "llamacpp":
        return section.n_ctx
    if section.backend == "vllm" and section.vllm_args.get("max_model_len"):
        return int(section.vllm_args["max_model_len"])
    return DEFAULT_CONTEXT_TOKENS


def make_backend(section, *, seed: int = 0, workdir: Path | None = None, limiter: Limiter | None = None,
                 reserve=None):
    """The bare backend named by `section.backend` (no budget, no cache); `workdir` holds the embedded
    server logs and the batch journal. `reserve(requests)`: a batch backend's hook before each batch is
    created (batch_backend.py; default: no reservation). Imported when built: only the configured backend's
    dependencies are loaded."""
    if section.backend == "openai":
        from .openai_backend import OpenAIBackend
        return OpenAIBackend(section, seed=seed, limiter=limiter)
    if section.backend == "llamacpp":
        from .embedded import EmbeddedTeacher
        return EmbeddedTeacher(section, seed=seed, workdir=workdir)
    if section.backend == "vllm":
        from .vllm_backend import VLLMBackend
        return VLLMBackend(section, seed=seed)
    if section.backend in BATCH_BACKENDS:
        from .batch_backend import BatchTeacher
        from .batch_providers import make_provider
        folder = batch_dir(section, workdir or Path("."))
        return BatchTeacher(section, make_provider(section, folder), folder, seed=seed, reserve=reserve)
    raise ValueError(f"unknown teacher backend {section.backend!r}")


def batch_dir(section, workdir: Path) -> Path:
    """A batch backend's journal folder: `section.batch_dir`, else <workdir>/teacher_batches (beside the
    response cache: like it, it is shared by the workdir's runs, so a new run never repays a live batch)."""
    return Path(section.batch_dir) if section.batch_dir else Path(workdir) / BATCH_DIR


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
            sec = self.section
            reservations = None
            if self.budget is not None and self.budget.max_cost is not None and sec.backend in BATCH_BACKENDS:
                reservations = teacher.reserve = BatchReservations(self.budget)  # a batch cannot pass the cap
            teacher = BreakerTeacher(teacher, Breaker(sec.breaker_consecutive, sec.breaker_rate, sec.breaker_window))
            teacher = LengthGuard(teacher, context_tokens(sec))
            if self.budget is not None:
                teacher = BudgetedTeacher(teacher, self.budget, wave=sec.concurrency, reservations=reservations)
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
