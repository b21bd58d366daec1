"""The teacher layer: protocol, backends (openai, llamacpp, vllm), response cache.

`make_teacher(section, workdir=..., seed=...)` builds the configured backend
wrapped in the SQLite response cache.
"""

from .base import ChatRequest, Completion, Sampling, Teacher, TeacherError, TeacherStats, Usage

__all__ = ["ChatRequest", "Completion", "Sampling", "Teacher", "TeacherError", "TeacherStats", "Usage"]
