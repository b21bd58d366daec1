"""The teacher's reasoning in a release: the three formats trainers use, and its length for the manifest.

Reads the `reasoning` and `messages` columns of a batch of rows about to be released; returns the batch with
`messages` rewritten (think_tags) and the length figures. Writes nothing.

- field: `messages` keep the answer only; the trace goes in a `reasoning` column (null where there is none).
- think_tags: the last assistant turn becomes `<think>\\n{reasoning}\\n</think>\\n\\n{answer}`, the layout
  DeepSeek-R1's distilled models were trained on and their chat templates expect; no `reasoning` column.
- answer_only: the trace is left out.

Length is counted in characters (Unicode code points): exact, and the same whatever the student's tokenizer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ... import records

FORMATS = ("answer_only", "think_tags", "field")


def think_content(reasoning: str, answer: str) -> str:
    return f"<think>\n{reasoning}\n</think>\n\n{answer}"


def with_think_tags(t: pa.Table) -> pa.Table:
    """`messages` with each row's reasoning put in `<think>` tags before the answer of its last assistant turn."""
    reasoning = t.column("reasoning")
    if reasoning.null_count == t.num_rows:
        return t
    msgs = t.column("messages").to_pylist()
    for i, r in enumerate(reasoning.to_pylist()):
        if r and msgs[i]:
            last = max((j for j, m in enumerate(msgs[i]) if m["role"] == "assistant"), default=None)
            if last is not None:
                msgs[i][last] = dict(msgs[i][last], content=think_content(r, msgs[i][last]["content"]))
    field = records.SCHEMA.field("messages")
    return t.set_column(t.schema.get_field_index("messages"), field, pa.array(msgs, field.type))


def lengths(t: pa.Table) -> np.ndarray:
    """Characters of each non-null reasoning trace in `t`."""
    col = t.column("reasoning")
    return pc.utf8_length(col.drop_null()).to_numpy().astype(np.int64) if len(col) - col.null_count else np.zeros(0, np.int64)


def summary(fmt: str, chars: np.ndarray, rows: int) -> dict[str, Any]:
    """The manifest's `reasoning` entry: the format and the traces' length in characters."""
    out: dict[str, Any] = {"format": fmt, "unit": "characters", "rows_with_reasoning": int(len(chars)),
                           "rows": rows}
    if len(chars):
        out.update(total=int(chars.sum()), mean=round(float(chars.mean()), 1), median=float(np.median(chars)),
                   max=int(chars.max()))
    return out
