"""`--out` never clobbers: what may be written into an output folder, and moving an old one aside.

A folder may be written by a stage when it is missing or empty, or when it is
that stage's own folder (its `_plan.json` names the stage): a rerun then
resumes, and the writer refuses a plan with other settings. Anything else
(another stage's dataset, a user's files, a folder with no `_plan.json`
holding files) is refused (DatasetError, exit 3) unless the command was
given `--overwrite`, which moves the old contents into `<out>/.stale/<time>/`
and never deletes them: they may hold paid-for teacher answers.

Not counted as contents: the folder's lock (`.lock`), `.stale/` itself,
hidden temporaries of killed writers (`.NAME.tmp-...`). Not foreign: names
starting with `_` (the pipeline's own: `_plan.json`, `_done/`, `_work/`,
`_rounds/`, written by a stage before its own `_plan.json`) and subfolders
that are dataset folders of their own.

An input that is the output folder or lies inside it is refused before
anything is touched (`input_inside`).
"""

from __future__ import annotations

import os
from pathlib import Path

from .. import records
from ..errors import DatasetError
from .atomic import is_temporary, read_json
from .location import Location, resolve
from .lock import LOCK_NAME

PLAN = "_plan.json"
STALE_DIR = ".stale"
RELEASE_MANIFEST = "manifest.json"
RELEASE_STARTED = ".release-started"  # written before a release's files, removed after its manifest


def stamp() -> str:
    return records.now_utc().strftime("%Y%m%dT%H%M%S%f")


def set_aside(path: Path, stale_dir: Path) -> Path:
    """Move `path` to `<stale_dir>/<name>-<time>` (one rename, never a delete); return where it went."""
    dest = Path(stale_dir) / f"{Path(path).name}-{stamp()}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, dest)
    return dest


def listing(paths: list[Path]) -> str:
    return ", ".join(p.name for p in paths[:3]) + (", ..." if len(paths) > 3 else "")


def contents(folder: Path) -> list[Path]:
    """What a folder holds that a writer must not clobber: all but its lock, .stale/ and temporaries."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.name not in (LOCK_NAME, STALE_DIR) and not is_temporary(p))


def stage_of(folder: Path) -> str | None:
    """The stage named by a folder's `_plan.json`; None without one. A corrupt plan is a DatasetError."""
    plan = folder / PLAN
    if not plan.is_file():
        return None
    try:
        return str(read_json(plan).get("stage") or "")
    except (OSError, ValueError, AttributeError) as e:
        raise DatasetError(f"{plan}: corrupt ({e.__class__.__name__}); delete it, or rerun with --overwrite") from None


def out_problem(target: "str | Path | Location", stage: str, *, release: bool = False) -> str | None:
    """Why `stage` must not write into `target`, or None when it may (empty, or its own folder).

    `release`: the stage writes a release folder (export), whose own marks are `manifest.json` naming the
    stage (a finished release) and `.release-started` (one being written).
    """
    loc = resolve(target)
    if not loc.local:
        return None  # object stores: the plan comparison in DatasetWriter is the only guard
    folder = Path(loc.path)
    if folder.exists() and not folder.is_dir():
        return "is a file, not a folder"
    held = contents(folder)
    if not held:
        return None
    if release:
        if (folder / RELEASE_STARTED).is_file():
            return None  # a release this stage began and did not finish (killed): the rerun redoes it
        mark = folder / RELEASE_MANIFEST
        try:
            if mark.is_file() and read_json(mark).get("stage") == stage:
                return None
        except (OSError, ValueError, AttributeError):
            pass
    owner = stage_of(folder)
    if owner is not None:
        if owner == stage:
            return None
        done = "a finished" if (folder / "_manifest.json").exists() else "an unfinished"
        return f"holds {done} `{owner or 'unknown'}` dataset"
    foreign = [p for p in held if not p.name.startswith("_")
               and not (p.is_dir() and ((p / PLAN).is_file() or (p / "_manifest.json").is_file()))]
    if not foreign:
        return None
    return f"holds files that `{stage}` did not write ({listing(foreign)})"


def check_out(target: "str | Path | Location", stage: str, *, release: bool = False) -> None:
    """Refuse (DatasetError) to write `stage` into `target` when `out_problem` says why."""
    why = out_problem(target, stage, release=release)
    if why:
        raise DatasetError(f"{target}: {why}; write to another --out, or pass --overwrite to move the old "
                           f"contents into {Path(str(target)) / STALE_DIR}/ first")


def clear_out(target: "str | Path | Location") -> Path | None:
    """--overwrite: move everything the folder holds into `<target>/.stale/<time>/`; return that folder."""
    loc = resolve(target)
    if not loc.local:
        raise DatasetError(f"{loc.uri}: --overwrite works on local folders only (object stores have no rename); "
                           "write to a new --out")
    folder = Path(loc.path)
    held = contents(folder)
    if not held:
        return None
    dest = folder / STALE_DIR / stamp()
    dest.mkdir(parents=True)
    for p in held:
        os.replace(p, dest / p.name)
    return dest


def input_inside(input: "str | Path | Location | None", target: "str | Path | Location") -> None:
    """Refuse an input that is the output folder or lies inside it: writing would destroy it."""
    if input is None:
        return
    src, out = resolve(input), resolve(target)
    if not (src.local and out.local):
        same = src.uri.rstrip("/") == out.uri.rstrip("/") or src.uri.startswith(out.uri.rstrip("/") + "/")
    else:
        a, b = Path(os.path.realpath(src.path)), Path(os.path.realpath(out.path))
        same = a == b or b in a.parents
    if same:
        raise DatasetError(f"{input}: the input is inside the output folder {target}; "
                           "write to another --out (nothing was touched)")
