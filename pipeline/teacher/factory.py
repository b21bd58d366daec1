"""The one place a teacher is assembled from its [teacher] section: a picklable factory.

A Ray worker never receives a teacher, only this factory (the section,
workdir and run seed), and builds its own on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TeacherFactory:
    """Builds the configured teacher on first use; a plain picklable object."""

    section: Any  # config.TeacherSection
    workdir: Path
    seed: int
    wrap: Any = None  # picklable callable applied to the backend inside the cache (refresh's shared budget)

    def __call__(self):
        from . import make_teacher
        return make_teacher(self.section, workdir=self.workdir, seed=self.seed, wrap=self.wrap)
