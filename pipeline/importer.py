"""`distill import`: turn a user's JSON, JSONL or Parquet file into a dataset.

Reads one file, writes one dataset folder (record schema). Accepted shapes,
detected per row:

- Alpaca / Dolly style: {"instruction", "input"?, "output"?, "category"?}
  (Dolly's "context" is read as the input);
- Self-Instruct seed tasks: {"instruction", "instances": [{"input", "output"}],
  "is_classification"}: one row per instance, origin "seed";
- chat rows: {"messages": [{"role", "content"}, ...]}: the first user turn is
  the instruction, the first assistant turn after it the output;
- Parquet with at least an `instruction` column (a full record-schema file is
  taken as it is).

Every row is validated; a bad row goes to `rejected/` with its line (JSONL) or
item number (JSON array) and the reason, raw text kept in `meta`. Nothing is
deduplicated here: that is the dedup stages' job. A file with no valid row is
an error.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from . import records
from .errors import InputFileError
from .logs import one_line
from .store import DatasetWriter

STAGE = "import"
_TEXT_FIELDS = ("instruction", "input", "output")


class RowError(ValueError):
    """One input row cannot be used; the message is the drop reason and detail."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _opt_text(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RowError("wrong_type", f"field '{key}' must be a string, got {type(value).__name__}")
    return value


def _from_messages(obj: dict[str, Any]) -> tuple[str, str, str, str | None]:
    msgs = obj["messages"]
    if not isinstance(msgs, list) or not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in msgs):
        raise RowError("bad_messages", "'messages' must be a list of {role, content} objects")
    system = next((m["content"] for m in msgs if m.get("role") == "system"), None)
    users = [i for i, m in enumerate(msgs) if m.get("role") == "user"]
    if not users:
        raise RowError("bad_messages", "no user turn in 'messages'")
    first = users[0]
    answer = next((m["content"] for m in msgs[first + 1:] if m.get("role") == "assistant"), "")
    return msgs[first]["content"], "", answer, system


def rows_from_object(obj: Any, *, run_id: str) -> list[dict[str, Any]]:
    """Record rows from one parsed JSON object (one per instance for seed tasks)."""
    if not isinstance(obj, dict):
        raise RowError("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    known = {"instruction", "input", "output", "context", "category", "instances", "is_classification",
             "messages", "id", "name", "kind", "response"}
    extra = {k: v for k, v in obj.items() if k not in known}
    system = None
    if "messages" in obj and "instruction" not in obj:
        instruction, input_, output, system = _from_messages(obj)
        pairs = [(input_, output)]
    else:
        if "instruction" not in obj:
            raise RowError("missing_instruction", f"no 'instruction' field (fields: {sorted(obj)[:8]})")
        instruction = _opt_text(obj, "instruction")
        if "instances" in obj:
            inst = obj["instances"]
            if not isinstance(inst, list) or not inst or not all(isinstance(i, dict) for i in inst):
                raise RowError("bad_instances", "'instances' must be a non-empty list of {input, output} objects")
            pairs = [(_opt_text(i, "input"), _opt_text(i, "output")) for i in inst]
        else:
            input_ = _opt_text(obj, "input") or _opt_text(obj, "context")
            output = _opt_text(obj, "output") or _opt_text(obj, "response")
            pairs = [(input_, output)]
    if not instruction.strip():
        raise RowError("empty_instruction", "the instruction is empty")
    is_clf = obj.get("is_classification")
    if is_clf is not None and not isinstance(is_clf, bool):
        raise RowError("wrong_type", "'is_classification' must be true or false")
    kind = obj.get("category") or obj.get("kind")
    origin = "seed" if "instances" in obj else "import"
    out = []
    for input_, output in pairs:
        row = records.new_row(instruction, input_, output, origin=origin, run_id=run_id,
                              is_classification=is_clf, task_kind=kind if isinstance(kind, str) else None)
        if system is not None:
            row["system"] = system
        if extra or obj.get("id") or obj.get("name"):
            source = {k: obj[k] for k in ("id", "name") if obj.get(k) is not None}
            if extra:
                source["extra"] = extra
            records.set_meta(row, STAGE, source)
        out.append(row)
    return out


_ROW_TOO_DEEP = "nested deeper than the JSON reader allows (about 1,000 levels)"
Items = Iterator[tuple[str, Any, str]]


def _lone_surrogate(obj: Any) -> str | None:
    """The first string (or key) in `obj` that UTF-8 cannot encode (a lone surrogate from a `\\udXXX` escape),
    escaped for a message; None when every string is valid. Iterative: `obj` may be nested ~1,000 deep."""
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, str):
            try:
                x.encode("utf-8")
            except UnicodeEncodeError as e:
                return x[e.start:e.end].encode("utf-8", "backslashreplace").decode("ascii")
        elif isinstance(x, dict):
            stack.extend(x)
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
    return None


def _checked(obj: Any) -> Any:
    """`obj`, or the RowError that keeps it out: a string no Parquet file can hold."""
    bad = _lone_surrogate(obj)
    return RowError("not_utf8", f"lone surrogate {bad} in a string (not valid UTF-8)") if bad else obj


def _parse_line(text: str) -> Any:
    try:
        return _checked(json.loads(text))
    except json.JSONDecodeError as e:
        return RowError("invalid_json", f"{e.msg} at column {e.colno}")
    except RecursionError:
        return RowError("too_deep", _ROW_TOO_DEEP)
    except ValueError as e:  # an integer literal over Python's 4,300-digit limit
        return RowError("invalid_json", one_line(e))


def safe_text(text: str) -> str:
    """`text` with anything UTF-8 cannot encode (lone surrogates) escaped, so a Parquet file can hold it."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _raw_of(obj: Any) -> str:
    try:
        return json.dumps(obj, default=str, ensure_ascii=False)
    except (RecursionError, ValueError):
        return f"<a {type(obj).__name__} too deeply nested to store>"


def _open_failed(path: Path, e: OSError) -> InputFileError:
    return InputFileError(f"{path}: cannot read the file ({e.strerror or e})")


def _json_items(path: Path) -> Items:
    """(location, parsed object or RowError, raw text) for a JSON array file; the file is read and parsed here,
    before any output is written."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as e:
        raise InputFileError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise InputFileError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except ValueError as e:  # an integer literal over Python's 4,300-digit limit
        raise InputFileError(f"{path}: invalid JSON: {one_line(e)}") from None
    except RecursionError:
        raise InputFileError(f"{path}: JSON nested too deeply to read (over about 1,000 levels); "
                             "flatten it, or use JSONL so one deep row is rejected alone") from None
    except OSError as e:
        raise _open_failed(path, e) from None
    except MemoryError:
        raise InputFileError(f"{path}: too big to load as one JSON document; write it as JSONL (one row a line), "
                             "which is read a line at a time") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise InputFileError(f"{path}: expected a JSON array of rows or one object, got {type(data).__name__}")
    return ((f"item {i}", _checked(obj), "") for i, obj in enumerate(data, 1))


def _jsonl_items(path: Path) -> Items:
    try:
        f = open(path, "rb")
    except OSError as e:
        raise _open_failed(path, e) from None

    def items() -> Items:
        with f:
            for lineno, raw in enumerate(f, 1):
                if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 BOM, as some editors write
                    raw = raw[3:]
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    yield (f"line {lineno}", RowError("not_utf8", f"invalid UTF-8 at byte {e.start}"),
                           raw.decode("utf-8", "replace"))
                    continue
                if not text.strip():
                    continue
                yield f"line {lineno}", _parse_line(text), text
    return items()


def _parquet_items(path: Path) -> tuple[Items, bool]:
    """The file's rows, and whether they already have the record schema. Opened here, before any output is
    written; a row group that cannot be decoded stops the import with the file and row group named."""
    try:
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
    except Exception as e:  # pyarrow raises several types for files that are not Parquet
        raise InputFileError(f"{path}: not a readable Parquet file ({e})") from None
    if "instruction" not in names and "messages" not in names:
        raise InputFileError(f"{path}: Parquet file has no 'instruction' or 'messages' column (columns: {names[:10]})")

    full_schema = set(records.COLUMN_NAMES) - records.LATER_COLUMNS <= set(names)
    if full_schema:
        wrong = _type_problems(pf.schema_arrow)
        if wrong:
            raise InputFileError(f"{path}: has the record schema's columns but not its types ({'; '.join(wrong[:3])}); "
                                 "cast those columns, or keep only instruction/input/output")

    def items() -> Items:
        n = 0
        batches = pf.iter_batches(batch_size=4096)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except Exception as e:  # a corrupt page behind an intact footer
                raise InputFileError(f"{path}: corrupt Parquet data after row {n}: {one_line(e)}; "
                                     "re-export the file") from None
            for obj in batch.to_pylist():
                n += 1
                yield f"row {n}", obj, ""
    return items(), full_schema


def _same_kind(got: pa.DataType, want: pa.DataType) -> bool:
    """Whether a column of type `got` casts to `want` without a value in it failing (int64 to int32 aside)."""
    t = pa.types
    if t.is_integer(want):
        return t.is_integer(got)
    if t.is_floating(want):
        return t.is_floating(got) or t.is_integer(got)
    if t.is_string(want) or t.is_large_string(want):
        return t.is_string(got) or t.is_large_string(got)
    if t.is_boolean(want):
        return t.is_boolean(got)
    # nested columns (messages, flags): the same shape is enough here; their values are checked as they are written
    return (t.is_list(want) and (t.is_list(got) or t.is_large_list(got))) or (t.is_struct(want) and t.is_struct(got))


def _type_problems(schema: pa.Schema) -> list[str]:
    out = []
    for f in records.SCHEMA:
        if f.name not in schema.names:  # a LATER_COLUMNS column a file written before it lacks
            continue
        got = schema.field(f.name).type
        if not (got.equals(f.type) or pa.types.is_null(got) or _same_kind(got, f.type)):
            out.append(f"'{f.name}' is {got}, expected {f.type}")
    return out


def _rows_from_parquet_record(obj: dict[str, Any], run_id: str) -> list[dict[str, Any]]:
    """A row that already has the record schema keeps its ids and lineage."""
    if not obj.get("instruction"):
        raise RowError("empty_instruction", "the instruction is empty")
    row = {n: obj.get(n) for n in records.COLUMN_NAMES}
    row["id"] = row["id"] or records.make_id(row["instruction"], row.get("input") or "")
    row["input"] = row.get("input") or ""
    row["root_id"] = row["root_id"] or row["id"]
    row["origin"] = row["origin"] or "import"
    row["round"] = row["round"] or 0
    row["created_at"] = row["created_at"] or records.now_utc()
    if row.get("messages") is None and row.get("output"):
        row["messages"] = records.build_messages(row["instruction"], row["input"], row["output"])
    return [row]


def _bad_row(loc: str, err: RowError, raw: str, run_id: str, path: Path) -> dict[str, Any]:
    raw = safe_text(raw)
    row = records.new_row("", "", "", origin="import", run_id=run_id)
    row["id"] = records.make_id(f"<bad row {path.name} {loc}>", raw)
    records.set_meta(row, STAGE, {"raw": raw[:20000], "location": loc})
    return records.rejected_row(row, STAGE, err.reason, f"{path.name} {loc}: {err.detail}")


def _write(writer: DatasetWriter, path: Path, loc: str, shard: int, kept: list[dict[str, Any]],
           rejected: list[dict[str, Any]], seen: int) -> None:
    try:
        writer.write_shard(shard, kept, rejected, {"rows_in": seen})
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:  # a record-schema Parquet value that does not fit its column
        raise InputFileError(f"{path}: a row before {loc} does not fit the record schema ({one_line(e)}); "
                             "fix its column types, or keep only instruction/input/output") from None


def _items(path: Path) -> tuple[Items, bool]:
    if path.is_dir():
        raise InputFileError(f"{path}: is a folder, not a file; give one .json, .jsonl or .parquet file")
    if not path.is_file():
        raise InputFileError(f"{path}: not a regular file; give one .json, .jsonl or .parquet file" if path.exists()
                             else f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _parquet_items(path)
    if suffix in (".jsonl", ".json"):
        try:
            with open(path, "rb") as f:
                head = f.read(2)
        except OSError as e:
            raise _open_failed(path, e) from None
        if head in (b"\xff\xfe", b"\xfe\xff"):  # what "Unicode" means in some Windows editors
            raise InputFileError(f"{path}: UTF-16 text; save it as UTF-8 (rows are read as UTF-8)")
    if suffix == ".jsonl":
        return _jsonl_items(path), False
    if suffix == ".json":
        return _json_items(path), False
    raise InputFileError(f"{path}: unknown file type '{suffix}'; expected .json, .jsonl or .parquet")


def import_file(path: str | Path, out: str | Path, *, run_id: str, shard_rows: int = 10000,
                limit: int | None = None) -> dict[str, Any]:
    """Import `path` into the dataset folder `out`; returns the manifest. `limit` counts input rows (lines,
    items), kept or rejected."""
    path = Path(path)
    items, full_schema = _items(path)
    suffix = path.suffix.lower()
    # Another stage's folder, a user's files or an import with other settings are refused (--overwrite);
    # the same import again is one cheap pass that rewrites the folder rather than resuming it.
    writer = DatasetWriter(out, STAGE, plan={"input": str(path.resolve()), "shard_rows": shard_rows, "limit": limit})
    writer.reset()
    kept: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    shard = 0
    seen = 0      # input rows for the shard being filled
    read = 0      # input rows in all, what `limit` caps
    ids: Counter = Counter()
    for loc, obj, raw in items:
        if limit is not None and read >= limit:
            break
        read += 1
        seen += 1
        try:
            if isinstance(obj, RowError):
                raise obj
            try:
                new = _rows_from_parquet_record(obj, run_id) if full_schema else rows_from_object(obj, run_id=run_id)
            except RecursionError:
                raise RowError("too_deep", _ROW_TOO_DEEP) from None
            kept.extend(new)
            ids.update(r["id"] for r in new)
        except RowError as e:
            rejected.append(_bad_row(loc, e, raw or _raw_of(obj), run_id, path))
        if len(kept) >= shard_rows:
            _write(writer, path, loc, shard, kept[:shard_rows], rejected, seen)
            kept, rejected, shard, seen = kept[shard_rows:], [], shard + 1, 0
    if kept or rejected or shard == 0:
        _write(writer, path, loc if read else "the start", shard, kept, rejected, seen)
    total_kept = sum(m["rows_out"] for m in writer.done_markers())
    if total_kept == 0:
        first = rejected[0]["drop_detail"] if rejected else "the file holds no rows"
        raise InputFileError(f"{path}: no valid row ({first})")
    return writer.write_manifest(run_id=run_id, input=str(path.resolve()), source_format=suffix.lstrip("."),
                                 repeated_task_ids=sum(1 for c in ids.values() if c > 1))
