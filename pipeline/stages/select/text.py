"""What the diversity walk embeds: the whole conversation, cut to the embedder's window.

Deita's repr filter embeds the whole conversation (prompt and answer), so two
rows that ask alike but answer differently are not repeats, and two that
answer alike are. The text of a row is its `messages` turns (system turns
left out: in Orca 1 mode they are one of a handful of fixed strategy
messages, which would only pull rows that share one together), or, for a
row without messages, its user turn (instruction, then input, as
`records.build_messages` joins them) and its answer. Turns are joined by a
blank line.

The embedder reads only its first `max_seq_length` tokens (MiniLM: 256), so
a long prompt would push the answer out of the window. The text is cut to
`max_chars` first, shared between the turns max-min fairly: a turn shorter
than its fair share is kept whole and the rest is split among the longer
ones. For a single turn pair this keeps the instruction in full and gives
the answer's head at least half the window when the prompt is long (a Dolly
closed-QA context, say); each turn keeps its head. Reads Arrow rows; writes
nothing.
"""

from __future__ import annotations

import pyarrow as pa

from ...records import build_messages

# Columns the conversation text is built from.
COLUMNS = ["instruction", "input", "output", "messages"]
# Characters per embedder token the default window assumes: MiniLM's word pieces average 4.6 characters on
# Dolly and 4.9 on Alpaca (measured); 4 leaves room for code and numbers, which cut into shorter pieces.
CHARS_PER_TOKEN = 4


def fair_shares(lengths: list[int], budget: int) -> list[int]:
    """Max-min fair cut of `lengths` to a total of at most `budget`: short ones whole, long ones equal."""
    if sum(lengths) <= budget:
        return list(lengths)
    out = [0] * len(lengths)
    left, open_ = budget, sorted(range(len(lengths)), key=lambda i: lengths[i])
    while open_:
        share = left // len(open_)
        i = open_[0]
        if lengths[i] <= share:
            out[i] = lengths[i]
            left -= lengths[i]
            open_.pop(0)
        else:
            for j in open_:
                out[j] = share
            break
    return out


def turns_of(row: dict) -> list[str]:
    """The non-system turns of a row: its messages, else its user turn and answer."""
    msgs = row.get("messages")
    if not msgs:
        msgs = build_messages(row.get("instruction") or "", row.get("input") or "", row.get("output") or None)
    return [m["content"] for m in msgs if m.get("role") != "system" and m.get("content")]


def conversation_text(row: dict, max_chars: int) -> str:
    turns = turns_of(row)
    cut = fair_shares([len(t) for t in turns], max(max_chars - 2 * (len(turns) - 1), len(turns)))
    return "\n\n".join(t[:c] for t, c in zip(turns, cut))


def conversation_texts(table: pa.Table | pa.RecordBatch, max_chars: int) -> list[str]:
    """The embedded text of each row of `table` (which has the COLUMNS)."""
    return [conversation_text(r, max_chars) for r in table.select(COLUMNS).to_pylist()]


def window_chars(max_tokens: int | None) -> int:
    """The default text window: the embedder's token window at CHARS_PER_TOKEN (256 tokens when unknown)."""
    return (max_tokens or 256) * CHARS_PER_TOKEN
