"""The card's `dataset_info`, as the Hugging Face Hub and `datasets` write it for a Parquet release.

Reads the release's Arrow schema and its written shards; returns the YAML lines of `dataset_info`. Writes nothing.

- `features`: the columns in `datasets`' YAML form (`Features._to_yaml_list`): `dtype` for a scalar, `list` for
  a list (of a dtype, or of a struct's fields), `struct` for a struct.
- per split `num_bytes`: the Arrow (in-memory) size that `datasets` records when it prepares the split: the sum of
  `nbytes` over the record batches its Parquet builder reads (one batch per row group); `num_examples`: rows.
- `download_size`: the Parquet files' size on disk; `dataset_size`: the sum of the splits' `num_bytes`.

Computed here without `datasets` (a test extra, not a dependency); tests/test_export_trl.py checks every field
against what `datasets` computes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pds

# Arrow type names that `datasets.Value` spells differently.
_DTYPES = {"double": "float64", "float": "float32", "halffloat": "float16"}


def feature(t: pa.DataType) -> dict[str, Any]:
    """One column's type as `datasets` writes it in YAML (without the name)."""
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        inner = t.value_type
        if pa.types.is_struct(inner):
            return {"list": fields(inner)}
        one = feature(inner)
        return {"list": one["dtype"] if "dtype" in one else one}
    if pa.types.is_struct(t):
        return {"struct": fields(t)}
    return {"dtype": _DTYPES.get(str(t), str(t))}


def fields(t: pa.StructType | pa.Schema) -> list[dict[str, Any]]:
    return [{"name": f.name, **feature(f.type)} for f in t]


def arrow_bytes(path: Path) -> int:
    """`nbytes` of the shard as `datasets`' Parquet builder reads it: record batches of one row group's rows."""
    with open(path, "rb") as f:
        fragment = pds.ParquetFileFormat().make_fragment(f)
        if not fragment.row_groups:
            return 0
        batches = fragment.to_batches(batch_size=fragment.row_groups[0].num_rows, batch_readahead=0,
                                      fragment_readahead=0)
        return sum(pa.Table.from_batches([b]).nbytes for b in batches)


def _entry(key: str, value: Any, lead: str, indent: int) -> list[str]:
    if isinstance(value, list):
        return [f"{lead}{key}:"] + _yaml(value, indent + 2)
    if isinstance(value, dict):
        return [f"{lead}{key}:"] + [line for k, v in value.items()
                                    for line in _entry(k, v, " " * (indent + 4), indent + 4)]
    return [f"{lead}{key}: {json.dumps(value)}"]


def _yaml(items: list[dict[str, Any]], indent: int) -> list[str]:
    """Block YAML for a list of features; strings as JSON strings, which YAML reads as they are."""
    pad = " " * indent
    return [line for item in items for i, (k, v) in enumerate(item.items())
            for line in _entry(k, v, pad + ("- " if i == 0 else "  "), indent)]


def dataset_info(schema: pa.Schema, files: list[dict[str, Any]], splits: dict[str, int]) -> list[str]:
    """The `dataset_info` block of the card header (YAML lines) for shards listed as in the manifest."""
    lines = ["dataset_info:", "  config_name: \"default\"", "  features:"] + _yaml(fields(schema), 2)
    lines.append("  splits:")
    sizes = {s: sum(f["arrow_bytes"] for f in files if f["split"] == s) for s in splits}
    for split, n in splits.items():
        lines += [f"  - name: {json.dumps(split)}", f"    num_bytes: {sizes[split]}", f"    num_examples: {n}"]
    lines += [f"  download_size: {sum(f['bytes'] for f in files)}", f"  dataset_size: {sum(sizes.values())}"]
    return lines
