"""Inputs must be finished: the one check every stage's input goes through, and an input's fingerprint.

A dataset folder is finished when its `_manifest.json` exists. A stage given
an unfinished folder refuses it (DatasetError, exit 3) with one line naming
the stage that was writing it (its `_plan.json`) and how to resume that
stage, unless the command was given `--allow-partial` ([run] allow_partial):
then it reads the shards that have done markers, and its output manifest
records `allow_partial: true` and how many input shards were complete.

`allowing_partial(path)` is how the flag reaches every `Dataset(...,
require_complete=True)` a stage opens on that input, in this thread only.

`fingerprint(ds)` names the data a folder holds (its shards' names, sizes
and rows, and whether it is finished); writers record it in `_plan.json` as
`input_fingerprint`, so a resume over an input that changed since is caught
by the plan comparison.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator

from .location import Location, resolve

MANIFEST = "_manifest.json"
PLAN = "_plan.json"

PARTIAL_OK: ContextVar[frozenset[str]] = ContextVar("partial_ok", default=frozenset())


def key(target: "str | Location | Any") -> str:
    return resolve(target).uri.rstrip("/")


@contextmanager
def allowing_partial(target: Any) -> Iterator[None]:
    """Within this block, an unfinished `target` is a usable input (--allow-partial)."""
    token = PARTIAL_OK.set(PARTIAL_OK.get() | {key(target)})
    try:
        yield
    finally:
        PARTIAL_OK.reset(token)


def partial_allowed(loc: Location) -> bool:
    return key(loc) in PARTIAL_OK.get()


def command_of(stage: str) -> str:
    return stage.replace("_", "-")


def unfinished_message(shown: Any, loc: Location) -> str:
    """The one line for an unfinished input: which stage was writing it, and how to finish it."""
    try:
        plan = loc.join(PLAN).read_json() if loc.join(PLAN).exists() else {}
        plan = plan if isinstance(plan, dict) else {}
    except (OSError, ValueError):
        plan = {}
    stage = plan.get("stage")
    if not stage:
        return (f"{shown}: unfinished dataset (no {MANIFEST}); finish the stage that writes it (a rerun resumes), "
                "or pass --allow-partial to use its finished shards")
    src = f" {plan['input']}" if plan.get("input") else " ..."
    return (f"{shown}: unfinished `{stage}` output (no {MANIFEST}); rerun `distill {command_of(stage)}{src} "
            f"--out {shown}` (or `distill run` for a run's folder) to finish it, or pass --allow-partial "
            "to use its finished shards")


def fingerprint(ds: Any) -> str:
    """A short hash of what `ds` (a store.Dataset) holds: finished or not, and each counted shard."""
    h = hashlib.sha256(b"finished\n" if ds.complete else b"unfinished\n")
    for loc, rows in ds.files():
        size = loc.fs.get_file_info(loc.path).size
        h.update(f"{loc.name}:{size}:{rows}\n".encode())
    return h.hexdigest()[:16]


def partial_note(ds: Any) -> dict[str, Any]:
    """What an output manifest records about an input used with --allow-partial."""
    return {"allow_partial": True, "input_shards_complete": len(ds.shards), "input_rows_complete": ds.num_rows()}


def record_partial(out: Any, manifest: dict[str, Any], note: dict[str, Any], *, release: bool = False) -> dict[str, Any]:
    """Add `note` (from `partial_note`) to the output's manifest file, when the stage wrote one."""
    loc = resolve(out).join("manifest.json" if release else MANIFEST)
    if not loc.exists():
        return manifest  # stopped early (a budget): nothing finished to annotate
    written = loc.read_json()
    written.update(note)
    loc.write_json(written)
    return dict(manifest, **note)
