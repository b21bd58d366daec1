"""Atomic publication of release versions under one folder.

    <publish_dir>/versions/<version>/   one complete release per version
    <publish_dir>/latest                symlink to versions/<version>

A version is staged under a hidden name (`.staging-<version>`) and renamed into `versions/` whole;
then `latest` is switched by renaming a new symlink over the old one, a single
atomic step: a reader of `latest` sees the old release or the new one, never a
mix. Older versions beyond `keep` are removed after the switch.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..store import fsync_dir

VERSIONS = "versions"
LATEST = "latest"


def versions(publish_dir: Path) -> list[Path]:
    d = Path(publish_dir) / VERSIONS
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))


def latest(publish_dir: Path) -> Path | None:
    link = Path(publish_dir) / LATEST
    return link.resolve() if link.is_symlink() and link.resolve().is_dir() else None


def staging_dir(publish_dir: Path, version: str) -> Path:
    """Where a version is built before publication (hidden from readers)."""
    d = Path(publish_dir) / VERSIONS / f".staging-{version}"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    return d


def clean_staging(publish_dir: Path) -> None:
    """Remove the half-built versions of runs that died (the caller holds the lock: nobody is building them)."""
    d = Path(publish_dir) / VERSIONS
    for p in d.glob(".staging-*") if d.is_dir() else []:
        shutil.rmtree(p, ignore_errors=True)


def publish(publish_dir: Path, version: str, staged: Path, keep: int = 3) -> Path:
    """Move `staged` into versions/<version>, switch `latest` to it, prune old versions."""
    publish_dir = Path(publish_dir)
    final = publish_dir / VERSIONS / version
    if final.exists():
        raise FileExistsError(f"{final}: version already published")
    os.replace(staged, final)
    fsync_dir(final.parent)
    link = publish_dir / LATEST
    tmp = publish_dir / f".{LATEST}.tmp-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(Path(VERSIONS) / version, tmp)
    os.replace(tmp, link)
    fsync_dir(publish_dir)
    current = final.resolve()
    for old in versions(publish_dir)[:-keep] if keep > 0 else []:
        if old.resolve() != current:
            shutil.rmtree(old)
    return final
