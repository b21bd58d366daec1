"""The one Arrow schema every stage reads and writes, stable ids, and chat messages.

Every dataset folder holds rows of `SCHEMA`; stage-specific columns stay null
until a stage fills them. Rejected rows use `REJECTED_SCHEMA`: the same columns
plus `drop_stage`, `drop_reason` and `drop_detail`.

Column names never change with flags. Stage-specific detail that has no column
of its own (e.g. Self-Instruct's most-similar pool instructions) goes in `meta`,
a JSON object serialised as a string, keyed by stage name.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from datetime import datetime, timezone
from typing import Any, Iterable, NamedTuple

import pyarrow as pa

MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])

# (name, type, description). The description feeds `distill inspect --schema`
# and the dataset card, so there is one place that says what a column means.
COLUMNS: list[tuple[str, pa.DataType, str]] = [
    ("id", pa.string(), "stable content hash of the normalised instruction and input"),
    ("parent_id", pa.string(), "id of the row this one was derived from (null for roots)"),
    ("root_id", pa.string(), "id of the first ancestor (the row itself for roots)"),
    ("origin", pa.string(), "seed | import | self_instruct | evol:<operation> | orca"),
    ("round", pa.int32(), "evolution depth (0 for roots)"),
    ("instruction", pa.string(), "the task"),
    ("input", pa.string(), "optional input for the task ('' when none)"),
    ("output", pa.string(), "the answer"),
    ("reasoning", pa.string(), "the teacher's reasoning trace, kept out of the answer (null when it gave none)"),
    ("system", pa.string(), "system message or strategy instruction used at generation time"),
    ("strategy", pa.string(), "Orca 2 strategy or system-message id used at generation time"),
    ("task_kind", pa.string(), "detected or declared kind of task (classification, math, ...)"),
    ("is_classification", pa.bool_(), "Self-Instruct classification flag"),
    ("messages", pa.list_(MESSAGE_TYPE), "the SFT example as a trainer sees it (Orca 2 mode: after prompt erasure)"),
    ("teacher_backend", pa.string(), "openai | llamacpp | vllm | fake"),
    ("teacher_model", pa.string(), "model name as the backend reports it"),
    ("sampling", pa.string(), "JSON of the sampling parameters used"),
    ("prompt_template", pa.string(), "name of the prompt template that produced the row"),
    ("prompt_hash", pa.string(), "sha256 prefix of that template's text"),
    ("finish_reason", pa.string(), "teacher finish reason for the output"),
    ("prompt_tokens", pa.int64(), "prompt tokens spent on this row"),
    ("completion_tokens", pa.int64(), "completion tokens spent on this row"),
    ("flags", pa.list_(pa.string()), "heuristic flags raised by scoring"),
    ("quality", pa.float64(), "quality score (1-6)"),
    ("complexity", pa.float64(), "complexity score (1-6)"),
    ("accuracy", pa.float64(), "AlpaGasus-style accuracy score (0-5)"),
    ("score", pa.float64(), "combined score used for selection"),
    ("minhash_cluster", pa.string(), "MinHash cluster id (the kept row's id)"),
    ("semdedup_cluster", pa.string(), "embedding-dedup cluster id (the kept row's id)"),
    ("meta", pa.string(), "JSON object of stage-specific detail, keyed by stage"),
    ("run_id", pa.string(), "run that created the row"),
    ("created_at", pa.timestamp("us", tz="UTC"), "when the row was created"),
]

DROP_COLUMNS: list[tuple[str, pa.DataType, str]] = [
    ("drop_stage", pa.string(), "stage that dropped the row"),
    ("drop_reason", pa.string(), "short machine-readable reason (e.g. rouge_l_too_similar)"),
    ("drop_detail", pa.string(), "human-readable detail (line number, similarity, duplicate id)"),
]

# Columns added after the first release of the schema: a shard written before one existed lacks it and reads
# as all nulls there (`schema_problems` accepts its absence, `fill_later` adds it on read).
LATER_COLUMNS = frozenset({"reasoning"})

SCHEMA = pa.schema([pa.field(n, t) for n, t, _ in COLUMNS])
REJECTED_SCHEMA = pa.schema([pa.field(n, t) for n, t, _ in COLUMNS + DROP_COLUMNS])
COLUMN_NAMES = [n for n, _, _ in COLUMNS]
REQUIRED_TEXT = ("id", "instruction")

_WS = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """NFKC, lowercased, whitespace collapsed: what makes two tasks 'the same'."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text or "")).strip().lower()


def make_id(instruction: str, input: str = "") -> str:
    """Stable content id: the same task gets the same id on every machine and run."""
    key = normalize_text(instruction) + "\x1f" + normalize_text(input)
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def build_messages(instruction: str, input: str = "", output: str | None = None,
                   system: str | None = None) -> list[dict[str, str]]:
    """Chat messages in the format TRL and HF datasets read as they are."""
    user = instruction if not input else f"{instruction}\n\n{input}"
    msgs: list[dict[str, str]] = []
    if system:
        msgs.append({"role": "system", "content": system})
    msgs.append({"role": "user", "content": user})
    if output is not None:
        msgs.append({"role": "assistant", "content": output})
    return msgs


def new_row(instruction: str, input: str = "", output: str = "", *, origin: str,
            parent: dict[str, Any] | None = None, run_id: str | None = None,
            **fields: Any) -> dict[str, Any]:
    """A row dict with id, lineage and timestamps filled; other columns from `fields`."""
    rid = make_id(instruction, input)
    row: dict[str, Any] = {n: None for n in COLUMN_NAMES}
    row.update(
        id=rid,
        parent_id=parent["id"] if parent else None,
        root_id=(parent.get("root_id") or parent["id"]) if parent else rid,
        origin=origin,
        round=(int(parent.get("round") or 0) + 1) if parent and origin.startswith("evol:") else 0,
        instruction=instruction,
        input=input or "",
        output=output,
        run_id=run_id,
        created_at=now_utc(),
    )
    unknown = set(fields) - set(COLUMN_NAMES)
    if unknown:
        raise KeyError(f"unknown record columns: {sorted(unknown)}")
    row.update(fields)
    if row.get("messages") is None and output:
        row["messages"] = build_messages(instruction, input, output)
    return row


def set_meta(row: dict[str, Any], stage: str, value: Any) -> None:
    meta = json.loads(row["meta"]) if row.get("meta") else {}
    meta[stage] = value
    row["meta"] = json.dumps(meta, ensure_ascii=False, sort_keys=True)


def get_meta(row: dict[str, Any], stage: str, default: Any = None) -> Any:
    if not row.get("meta"):
        return default
    return json.loads(row["meta"]).get(stage, default)


def to_table(rows: Iterable[dict[str, Any]], schema: pa.Schema = SCHEMA) -> pa.Table:
    """Rows (dicts, missing columns allowed) to a table of exactly `schema`."""
    rows = list(rows)
    cols = {f.name: [r.get(f.name) for r in rows] for f in schema}
    return pa.Table.from_pydict(cols, schema=schema)


class Drop(NamedTuple):
    """Why a filter dropped a row: `reason` is the counted name (a manifest key), `detail` the specifics.
    A filter returns a Drop or None (keep); a tuple, so `reason, detail = drop` reads it too."""

    reason: str
    detail: str = ""


def rejected_row(row: dict[str, Any], stage: str, reason: str, detail: str = "") -> dict[str, Any]:
    out = dict(row)
    out.update(drop_stage=stage, drop_reason=reason, drop_detail=detail)
    return out


def conform(table: pa.Table, schema: pa.Schema = SCHEMA) -> pa.Table:
    """Add missing nullable columns and order/cast to `schema`; extra columns are an error."""
    extra = set(table.column_names) - set(schema.names)
    if extra:
        raise ValueError(f"columns not in the record schema: {sorted(extra)}")
    arrays = []
    for f in schema:
        if f.name in table.column_names:
            arrays.append(table.column(f.name).cast(f.type))
        else:
            arrays.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def schema_problems(schema: pa.Schema, expected: pa.Schema = SCHEMA) -> list[str]:
    """What is wrong with `schema` compared to the record schema (empty when fine)."""
    problems = []
    for f in expected:
        if f.name not in schema.names and f.name in LATER_COLUMNS:
            continue
        if f.name not in schema.names:
            problems.append(f"missing column '{f.name}'")
        elif not schema.field(f.name).type.equals(f.type):
            problems.append(f"column '{f.name}' is {schema.field(f.name).type}, expected {f.type}")
    extra = [n for n in schema.names if n not in expected.names]
    if extra:
        problems.append(f"unexpected columns {extra}")
    return problems


def present_columns(columns: list[str] | None, names: list[str]) -> list[str] | None:
    """`columns` less the LATER_COLUMNS a file written before them lacks (None: all)."""
    if columns is None:
        return None
    return [c for c in columns if c in names or c not in LATER_COLUMNS]


def fill_later(data: "pa.Table | pa.RecordBatch", columns: list[str] | None = None) -> "pa.Table | pa.RecordBatch":
    """`data` read from a shard written before a LATER_COLUMNS column existed: that column added as nulls
    (where `columns` asks for it, or always when `columns` is None), so old and new shards concatenate."""
    wanted = [c for c in (columns if columns is not None else SCHEMA.names) if c in LATER_COLUMNS]
    for name in wanted:
        if name not in data.schema.names:
            field = SCHEMA.field(name)
            # at its place in the schema (after the column before it), so the shard's schema equals a new one's
            before = COLUMN_NAMES[COLUMN_NAMES.index(name) - 1]
            at = data.schema.get_field_index(before) + 1 if before in data.schema.names else data.num_columns
            data = data.add_column(at, field, pa.nulls(data.num_rows, field.type))
    if columns is not None and wanted:
        data = data.select(columns)
    return data
