"""A night's names: its run id (dated, unique in the workdir and among published versions) and its seed."""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from pathlib import Path

from . import publish as pub


def night_seed(base_seed: int, day: date, previous: str | None) -> int:
    h = hashlib.sha256(f"refresh\x1f{base_seed}\x1f{day.isoformat()}\x1f{previous or ''}".encode()).digest()
    return int.from_bytes(h[:4], "big") & 0x7FFFFFFF


def new_run_id(workdir: Path, publish_dir: Path, now: datetime) -> str:
    base = "refresh-" + now.strftime("%Y%m%d-%H%M%S")
    rid, n = base, 2
    while (workdir / rid).exists() or (publish_dir / pub.VERSIONS / rid).exists():
        rid, n = f"{base}-{n}", n + 1
    return rid
