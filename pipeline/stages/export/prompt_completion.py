"""TRL's conversational prompt/completion format: each chat split at its last assistant turn.

Reads the `messages` column of a batch of rows about to be released (after the reasoning format has put any
`<think>` trace into the assistant turn); returns the batch with `prompt` (every turn before the last assistant
turn: system and user, and earlier turns of a multi-turn chat) and `completion` (a one-item list: that assistant
turn). Writes nothing. TRL's SFTTrainer computes the loss on `completion` only (`completion_only_loss`, its
default for this format), so no chat template needs generation markers.
"""

from __future__ import annotations

import pyarrow as pa

from ... import records
from ...errors import DatasetError

COLUMNS = ("prompt", "completion")
FIELDS = {c: pa.field(c, pa.list_(records.MESSAGE_TYPE)) for c in COLUMNS}


def split_chat(messages: list[dict]) -> tuple[list[dict], list[dict]] | None:
    """(prompt, [completion]) for one chat, or None when it has no assistant turn after a prompt turn or when
    turns follow its last assistant turn (nothing a completion-only loss could train on as it stands)."""
    if len(messages) < 2 or messages[-1]["role"] != "assistant":
        return None
    return messages[:-1], messages[-1:]


def with_prompt_completion(t: pa.Table) -> pa.Table:
    """`t` with `prompt` and `completion` columns made from `messages`; a row whose chat cannot be split is a
    DatasetError that names it (every exported row has an answer turn, so this means a hand-edited pool)."""
    prompts, completions = [], []
    ids = t.column("id").to_pylist() if "id" in t.column_names else [None] * t.num_rows
    for rid, msgs in zip(ids, t.column("messages").to_pylist()):
        pair = split_chat(msgs or [])
        if pair is None:
            raise DatasetError(f"row {rid}: its messages do not end with an assistant turn after a prompt, so "
                               "there is no completion to split off; export with --format messages")
        prompts.append(pair[0])
        completions.append(pair[1])
    for name, values in zip(COLUMNS, (prompts, completions)):
        t = t.append_column(FIELDS[name], pa.array(values, FIELDS[name].type))
    return t
