"""Seed pools for Self-Instruct: the team's own tasks, or a user's file or dataset.

Reads one of:
- Self-Instruct seed JSONL: {id, name, instruction, instances: [{input, output}], is_classification[, kind]};
- plain JSONL: {instruction, input?, output?} per line (one task per line);
- Alpaca-style JSON: an array of {instruction, input?, output?} (or of seed-task objects);
- a dataset folder written by any stage (rows grouped into tasks by instruction).
Writes nothing. A malformed line is an `InputFileError` naming the file and the
line: a seed pool is small and hand-made, so a bad line is a mistake to fix,
not a row to skip. Repeated instructions are kept once and reported.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ... import records
from ...assets import data_dir
from ...errors import DatasetError, InputFileError
from ...store import Dataset

TEAM_SEEDS = "seed_tasks.jsonl"


@dataclass
class SeedTask:
    instruction: str
    instances: list[tuple[str, str]]
    is_classification: bool | None = None
    kind: str | None = None
    name: str | None = None
    where: str = ""   # "line 12", "item 3", "row 40": where it came from


@dataclass
class SeedPool:
    path: Path
    format: str
    tasks: list[SeedTask]
    duplicates: list[dict[str, str]] = field(default_factory=list)
    sha256: str = ""

    def summary(self) -> dict[str, Any]:
        return {"path": str(self.path), "format": self.format, "tasks": len(self.tasks),
                "classification": sum(1 for t in self.tasks if t.is_classification),
                "duplicates": len(self.duplicates), "duplicate_examples": self.duplicates[:10],
                "sha256": self.sha256}


def team_seeds_path() -> Path:
    return data_dir() / TEAM_SEEDS


def _text(obj: dict[str, Any], key: str, where: str, path: Path) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputFileError(f"{path}: {where}: field '{key}' must be a string, got {type(value).__name__}")
    return value


def task_from_object(obj: Any, where: str, path: Path) -> SeedTask:
    """One seed task from a parsed JSON object; any problem is an InputFileError naming `where`."""
    if not isinstance(obj, dict):
        raise InputFileError(f"{path}: {where}: expected a JSON object, got {type(obj).__name__}")
    if "instruction" not in obj:
        raise InputFileError(f"{path}: {where}: no 'instruction' field (fields: {sorted(obj)[:8]})")
    instruction = _text(obj, "instruction", where, path)
    if not instruction.strip():
        raise InputFileError(f"{path}: {where}: the instruction is empty")
    if "instances" in obj:
        inst = obj["instances"]
        if not isinstance(inst, list) or not inst or not all(isinstance(i, dict) for i in inst):
            raise InputFileError(f"{path}: {where}: 'instances' must be a non-empty list of {{input, output}} objects")
        pairs = [(_text(i, "input", where, path), _text(i, "output", where, path)) for i in inst]
    else:
        pairs = [(_text(obj, "input", where, path), _text(obj, "output", where, path))]
    is_clf = obj.get("is_classification")
    if is_clf is not None and not isinstance(is_clf, bool):
        raise InputFileError(f"{path}: {where}: 'is_classification' must be true or false")
    kind = obj.get("kind", obj.get("category"))
    name = obj.get("name")
    return SeedTask(instruction=instruction.strip(), instances=pairs, is_classification=is_clf,
                    kind=kind if isinstance(kind, str) else None,
                    name=name if isinstance(name, str) else None, where=where)


def _jsonl(path: Path) -> Iterator[SeedTask]:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"line {lineno}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputFileError(f"{path}: {where}: invalid UTF-8 at byte {e.start}") from None
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise InputFileError(f"{path}: {where}: invalid JSON ({e.msg} at column {e.colno})") from None
            yield task_from_object(obj, where, path)


def _json(path: Path) -> Iterator[SeedTask]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise InputFileError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise InputFileError(f"{path}: line {e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise InputFileError(f"{path}: expected a JSON array of tasks, got {type(data).__name__}")
    for i, obj in enumerate(data, 1):
        yield task_from_object(obj, f"item {i}", path)


def _dataset(path: Path) -> Iterator[SeedTask]:
    try:
        ds = Dataset(path)
    except DatasetError as e:
        raise InputFileError(str(e)) from None
    groups: dict[str, SeedTask] = {}
    cols = ["instruction", "input", "output", "is_classification", "task_kind"]
    for n, row in enumerate(ds.iter_rows(columns=cols), 1):
        instruction = (row["instruction"] or "").strip()
        if not instruction:
            raise InputFileError(f"{path}: row {n}: the instruction is empty")
        key = records.normalize_text(instruction)
        pair = (row["input"] or "", row["output"] or "")
        if key in groups:  # more rows of one task are its instances, not duplicates
            groups[key].instances.append(pair)
        else:
            groups[key] = SeedTask(instruction, [pair], row["is_classification"], row["task_kind"], where=f"row {n}")
    yield from groups.values()


def load_seeds(path: str | Path | None = None) -> SeedPool:
    """Load a seed pool; `None` means the team's own seed tasks shipped in data/."""
    p = Path(path) if path is not None else team_seeds_path()
    if not p.exists():
        raise InputFileError(f"{p}: seed file not found")
    if p.is_dir():
        fmt, tasks, digest = "dataset", list(_dataset(p)), ""
    else:
        fmt = "json" if p.suffix.lower() == ".json" else "jsonl"
        tasks = list(_json(p) if fmt == "json" else _jsonl(p))
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        if fmt == "jsonl" and tasks and _has_instances(p):
            fmt = "self_instruct_jsonl"
    kept: list[SeedTask] = []
    first: dict[str, SeedTask] = {}
    duplicates = []
    for t in tasks:
        key = records.normalize_text(t.instruction)
        if key in first:
            duplicates.append({"where": t.where, "same_as": first[key].where, "instruction": t.instruction[:120]})
            continue
        first[key] = t
        kept.append(t)
    if not kept:
        raise InputFileError(f"{p}: no seed tasks found")
    return SeedPool(path=p, format=fmt, tasks=kept, duplicates=duplicates, sha256=digest)


def _has_instances(path: Path) -> bool:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                return "instances" in json.loads(line)
    return False
