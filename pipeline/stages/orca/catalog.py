"""The Orca catalogs: system messages (prompts/orca/system_messages.toml), strategies
(prompts/orca/strategies.toml), the per-kind mappings, and the strategy-map
files that `distill orca calibrate` writes and `--strategy-map FILE` reads.

Every problem raises one `ConfigError` that names the file and the key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ...assets import prompts_dir
from ...config import read_toml
from ...errors import ConfigError, TemplateError
from ...prompts import load_catalog, load_template
from ...store import atomic_write_bytes
from .task_kind import TASK_KINDS

N_MESSAGES = 16
MC_ONLY = (8, 10)  # the paper reserves these for multiple-choice questions


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: int = Field(ge=1, le=N_MESSAGES)
    intent: str
    text: str


class _MessageCatalog(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: list[_Message]
    allowed: dict[str, list[int]]


class _Strategy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str
    text: str = Field(min_length=1)


class _StrategyCatalog(BaseModel):
    model_config = ConfigDict(extra="forbid")
    strategy: dict[str, _Strategy]
    default: dict[str, str]


def _read(ref: str) -> tuple[str, dict[str, Any], str]:
    """(label, parsed TOML, text hash) for a catalog name under prompts/ or a file path."""
    p = Path(ref)
    if p.is_file():
        root, name = p.parent, p.name
    else:
        root, name = prompts_dir(), ref
    try:
        data = load_catalog(name, root=root)
    except TemplateError as e:
        raise ConfigError(str(e)) from None
    digest = hashlib.sha256((root / name).read_bytes()).hexdigest()[:16]
    return ref, data, digest


def _errors(label: str, err: ValidationError, data: dict[str, Any]) -> ConfigError:
    lines = []
    for e in err.errors():
        loc = list(e["loc"])
        # "message.3.text" names a list index; say which message id that is.
        if len(loc) >= 2 and loc[0] == "message" and isinstance(loc[1], int):
            try:
                mid = data["message"][loc[1]].get("id", "?")
            except (KeyError, IndexError, AttributeError):
                mid = "?"
            where = f"message[{loc[1]}] (id {mid})" + "".join(f".{x}" for x in loc[2:])
        else:
            where = ".".join(str(x) for x in loc)
        lines.append(f"catalog '{label}': {where}: {e['msg']}")
    return ConfigError("\n".join(lines))


def _check_kinds(label: str, table: str, kinds: Any) -> None:
    unknown = sorted(set(kinds) - set(TASK_KINDS))
    if unknown:
        raise ConfigError(f"{label}: [{table}] has unknown task kinds {unknown}; known: {', '.join(TASK_KINDS)}")


@dataclass(frozen=True)
class SystemCatalog:
    label: str
    messages: dict[int, str]        # id -> text (id 1 is "")
    intents: dict[int, str]
    allowed: dict[str, tuple[int, ...]]  # every task kind -> allowed ids
    hash: str

    def text(self, mid: int) -> str:
        return self.messages[mid]


def load_system_catalog(ref: str = "orca/system_messages.toml",
                        overrides: dict[str, list[int]] | None = None) -> SystemCatalog:
    label, data, digest = _read(ref)
    try:
        cat = _MessageCatalog.model_validate(data)
    except ValidationError as e:
        raise _errors(label, e, data) from None
    ids = [m.id for m in cat.message]
    if sorted(ids) != list(range(1, N_MESSAGES + 1)):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        missing = sorted(set(range(1, N_MESSAGES + 1)) - set(ids))
        raise ConfigError(f"catalog '{label}': [[message]] ids must be 1..{N_MESSAGES} once each"
                          f" (duplicated {dup}, missing {missing})")
    msgs = {m.id: m.text.strip() for m in cat.message}
    if msgs[1]:
        raise ConfigError(f"catalog '{label}': message id 1 must have text = \"\" (the empty system message)")
    blank = [i for i, t in msgs.items() if i != 1 and not t]
    if blank:
        raise ConfigError(f"catalog '{label}': messages {blank} have empty text (only id 1 may be empty)")
    allowed = dict(cat.allowed)
    _check_kinds(label, "allowed", allowed)
    if overrides:
        _check_kinds("[orca] system_map", "system_map", overrides)
        allowed.update(overrides)
    missing_kinds = [k for k in TASK_KINDS if not allowed.get(k)]
    if missing_kinds:
        raise ConfigError(f"catalog '{label}': [allowed] gives no message ids for task kinds {missing_kinds}")
    for kind, mids in allowed.items():
        bad = sorted(set(mids) - set(msgs))
        if bad:
            raise ConfigError(f"catalog '{label}': allowed.{kind}: unknown message ids {bad}")
    return SystemCatalog(label=label, messages=msgs, intents={m.id: m.intent for m in cat.message},
                         allowed={k: tuple(v) for k, v in allowed.items()}, hash=digest)


@dataclass(frozen=True)
class StrategyCatalog:
    label: str
    texts: dict[str, str]       # name -> instruction, in catalog order
    default: dict[str, str]     # every task kind -> strategy name
    hash: str

    @property
    def names(self) -> list[str]:
        return list(self.texts)


def load_strategy_catalog(ref: str = "orca/strategies.toml") -> StrategyCatalog:
    label, data, digest = _read(ref)
    try:
        cat = _StrategyCatalog.model_validate(data)
    except ValidationError as e:
        raise _errors(label, e, data) from None
    if not cat.strategy:
        raise ConfigError(f"catalog '{label}': no [strategy.<name>] tables")
    _check_kinds(label, "default", cat.default)
    missing = [k for k in TASK_KINDS if k not in cat.default]
    if missing:
        raise ConfigError(f"catalog '{label}': [default] names no strategy for task kinds {missing}")
    texts = {n: s.text.strip() for n, s in cat.strategy.items()}
    check_strategy_map(label, "default", cat.default, texts)
    return StrategyCatalog(label=label, texts=texts, default=dict(cat.default), hash=digest)


def check_strategy_map(label: str, table: str, mapping: dict[str, str], texts: dict[str, str]) -> None:
    _check_kinds(label, table, mapping)
    for kind, name in mapping.items():
        if name not in texts:
            raise ConfigError(f"{label}: {table}.{kind}: unknown strategy '{name}'; known: {', '.join(texts)}")


def read_strategy_map(path: str | Path, catalog: StrategyCatalog) -> dict[str, str]:
    """The [strategy_map] table of a calibration file, checked against the catalog."""
    p = Path(path)
    data = read_toml(p, f"strategy map not found (write one with `distill orca calibrate DATASET --out {p}`)")
    table = data.get("strategy_map")
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise ConfigError(f"{p}: needs a [strategy_map] table of task kind = \"strategy name\"")
    check_strategy_map(str(p), "strategy_map", table, catalog.texts)
    return dict(table)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, dict):  # inline table; keys are identifiers (strategy names, fields)
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(str(v), ensure_ascii=False)  # JSON string escapes are valid TOML basic strings


def write_strategy_map(path: str | Path, mapping: dict[str, str], scores: dict[str, dict[str, Any]],
                       info: dict[str, Any]) -> None:
    """A small TOML file: [calibration] info, [strategy_map], one [scores.<kind>] per kind."""

    lines = ["# Written by `distill orca calibrate`; read by `distill orca --strategy-map FILE`.",
             "# [strategy_map] is what the stage uses; [scores.*] show how each strategy did.", "",
             "[calibration]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in info.items() if v is not None]
    lines += ["", "[strategy_map]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in sorted(mapping.items())]
    for kind in sorted(scores):
        lines += ["", f"[scores.{kind}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in scores[kind].items()]
    atomic_write_bytes(Path(path), ("\n".join(lines) + "\n").encode("utf-8"))


def generic_system_message(configured: str | None) -> str:
    """The training-time system message: the configured text, else the shipped default."""
    if configured is not None:
        return configured.strip()
    return load_template("orca/generic_system.txt").text.strip()
