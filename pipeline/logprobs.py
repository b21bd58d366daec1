"""Compact storage of a teacher's per-token top-k logprobs, for distillation on soft targets.

Reads what a backend returned (the OpenAI chat shape `logprobs.content`: a list of
{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}, or the legacy
completions shape) and writes two forms:

- in a row's `meta` (JSON, what a generation stage keeps): `compact()`, a list of
  [token, logprob, [[alt, logprob], ...top k]] per generated position, logprobs
  rounded to 4 decimals. A token is its text, or the list of its byte values when
  the backend's `bytes` differ from the text's UTF-8 (a token that splits a UTF-8
  character: the text then holds a replacement character, the bytes are the identity).
- in a release's side file (Parquet, zstd; one row per release row, same order):
  `side_table()`, with token identities as binary (dictionary-encoded by Parquet)
  and logprobs quantised to uint16 steps of 1/64 nat (an error of at most 1/128
  nat; -inf and anything below -1023.98 nats is stored as the last step). A
  position's top-k list is stored as differences of those steps (best first, so
  each is >= 0 and small), which zstd packs to about a byte a value.
  `decode_side_row()` reads a row back.

`measure()` sizes a side table and checks it against the raw JSON it came from (bytes per token, top-1
agreement, largest error in nats): the k = 20 teacher test and scripts/bench_logprobs.py share it.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

STEP = 1.0 / 64.0  # nats per quantisation step
MAX_Q = 65535
SIDE_PREFIX = "logprobs-"
_BIN = pa.list_(pa.binary())
_Q = pa.list_(pa.uint16())
SIDE_SCHEMA = pa.schema([
    pa.field("id", pa.string()),
    pa.field("token", _BIN),                    # the generated token at each position
    pa.field("logprob", _Q),                    # its logprob, quantised
    pa.field("top_token", pa.list_(_BIN)),      # the top-k alternatives per position, best first
    pa.field("top_logprob", pa.list_(_Q)),     # steps as differences: the first absolute, then each minus the last
])


def side_file(shard: str) -> str:
    """The side file's name next to a shard: logprobs-train-00000-of-00001.parquet."""
    return SIDE_PREFIX + shard


def _num(x: Any) -> float | None:
    try:
        return round(float(x), 4)
    except (TypeError, ValueError):
        return None


def _identity(item: dict[str, Any]) -> str | list[int] | None:
    """The token's text, or its bytes when they are not the text's UTF-8."""
    text, raw = item.get("token"), item.get("bytes")
    if isinstance(raw, list) and raw and (text is None or bytes(raw) != str(text).encode("utf-8")):
        return [int(b) for b in raw]
    return text


def compact(raw: Any, k: int) -> list[list[Any]] | None:
    """[[token, logprob, [[alt, logprob], ...top k]], ...] from what a backend returned; None without logprobs."""
    if raw is None:
        return None
    if isinstance(raw, dict) and "content" in raw:
        raw = raw["content"]
    if isinstance(raw, dict) and "tokens" in raw:
        tops = raw.get("top_logprobs") or [None] * len(raw["tokens"])
        raw = [{"token": t, "logprob": lp, "top_logprobs": top}
               for t, lp, top in zip(raw["tokens"], raw.get("token_logprobs") or [], tops)]
    if not isinstance(raw, list):
        return None
    out: list[list[Any]] = []
    for item in raw:
        if not isinstance(item, dict):
            continue
        top = item.get("top_logprobs") or []
        if isinstance(top, dict):
            alts = [[t, _num(lp)] for t, lp in top.items()]
        else:
            alts = [[_identity(a), _num(a.get("logprob"))] for a in top if isinstance(a, dict)]
        alts.sort(key=lambda a: -(a[1] if a[1] is not None else float("-inf")))
        out.append([_identity(item), _num(item.get("logprob")), alts[:k]])
    return out


def token_bytes(token: str | list[int] | None) -> bytes:
    """A stored token identity as bytes (text as UTF-8)."""
    if token is None:
        return b""
    return bytes(token) if isinstance(token, list) else str(token).encode("utf-8")


def quantise(lp: Any) -> np.ndarray:
    x = np.asarray(lp, dtype=np.float64)
    x = np.where(np.isnan(x) | (x == -np.inf), -np.inf, np.minimum(x, 0.0))
    return np.clip(np.rint(-x / STEP), 0, MAX_Q).astype(np.uint16)


def dequantise(q: Any) -> np.ndarray:
    return -np.asarray(q, dtype=np.float32) * np.float32(STEP)


def from_meta(meta: str | None) -> list[list[Any]] | None:
    """The compact logprobs a generation stage kept in a row's `meta` JSON (the last stage that kept some)."""
    if not meta:
        return None
    found = None
    for value in json.loads(meta).values():
        if isinstance(value, dict) and isinstance(value.get("logprobs"), list):
            found = value["logprobs"]
    return found


def _ascii_words(text: str) -> str:
    return "".join(ch for ch in text if ch.isascii() and not ch.isspace())


def covers(lp: list[list[Any]], output: str | None) -> bool:
    """Whether the tokens of `lp` hold the row's answer `output`: a later stage (Orca answering an Evol or
    Self-Instruct row without logprobs) may have rewritten it, and the old answer's logprobs would then
    teach a student the wrong text. Compared on ASCII, whitespace left out: a backend that gives no bytes
    for a token split inside a UTF-8 character (llama-cpp-python) leaves that character out of the tokens,
    and a trace before the answer (`<think>`) or an instance's `Output:` label around it is allowed."""
    if output is None:
        return True
    joined = b"".join(token_bytes(p[0]) for p in lp).decode("utf-8", errors="ignore")
    return _ascii_words(output) in _ascii_words(joined)


def side_table(ids: list[str], metas: list[str | None], outputs: list[str | None] | None = None,
               stale: list[str] | None = None) -> pa.Table:
    """One side-file row per release row: null lists where a row has no logprobs, or (given `outputs`)
    where its logprobs do not hold its answer (their ids appended to `stale`)."""
    cols: dict[str, list[Any]] = {f.name: [] for f in SIDE_SCHEMA}
    for rid, meta, output in zip(ids, metas, outputs if outputs is not None else [None] * len(ids)):
        lp = from_meta(meta)
        if lp and not covers(lp, output):
            if stale is not None:
                stale.append(rid)
            lp = None
        cols["id"].append(rid)
        if not lp:
            for name in ("token", "logprob", "top_token", "top_logprob"):
                cols[name].append(None)
            continue
        cols["token"].append([token_bytes(p[0]) for p in lp])
        cols["logprob"].append(quantise([p[1] if p[1] is not None else -np.inf for p in lp]))
        cols["top_token"].append([[token_bytes(a[0]) for a in p[2]] for p in lp])
        cols["top_logprob"].append([np.diff(quantise([a[1] if a[1] is not None else -np.inf for a in p[2]]),
                                            prepend=np.uint16(0)).astype(np.uint16) for p in lp])
    return pa.table({f.name: pa.array(cols[f.name], f.type) for f in SIDE_SCHEMA}, schema=SIDE_SCHEMA)


def side_bytes(table: pa.Table) -> bytes:
    """The side file's Parquet bytes: zstd at a high level (the file is written once, read by trainers)."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", compression_level=19)
    return buf.getvalue()


def positions(table: pa.Table) -> int:
    """Generated positions held by a side table (rows without logprobs count none)."""
    col = table.column("token")
    return int(sum(len(v) for v in col.to_pylist() if v is not None))


def decode_side_row(row: dict[str, Any]) -> tuple[list[bytes], np.ndarray, list[list[bytes]], list[np.ndarray]] | None:
    """(tokens, their logprobs, top-k tokens per position, their logprobs) of one side-file row; None without."""
    if row.get("token") is None:
        return None
    return (row["token"], dequantise(row["logprob"]), row["top_token"],
            [dequantise(np.cumsum(np.asarray(q, dtype=np.int64))) for q in row["top_logprob"]])


def agreement(table: pa.Table, raws: list[Any]) -> tuple[float, int]:
    """(largest |error| in nats over every kept logprob, positions whose stored best token is the raw best) of a
    side table whose rows are `raws`' answers in the same order (raw `logprobs.content` lists or {content: ...})."""
    err, top1 = 0.0, 0
    for row, raw in zip(table.to_pylist(), raws):
        content = raw["content"] if isinstance(raw, dict) else raw
        _, lp, top_tokens, top_lps = decode_side_row(row)
        for p, chosen, toks, vals in zip(content, lp, top_tokens, top_lps):
            want = {token_bytes(_identity(q)): float(q["logprob"]) for q in p.get("top_logprobs") or []}
            err = max(err, abs(float(chosen) - float(p["logprob"])),
                      *(abs(float(v) - want[t]) for t, v in zip(toks, vals)))
            top1 += bool(toks) and toks[0] == max(want, key=want.get)
    return err, top1


def measure(raws: list[Any], k: int = 20, *, table: pa.Table | None = None, size: int | None = None,
            raw_bytes: int | None = None) -> dict[str, Any]:
    """Size and accuracy of the side file for raw `logprobs.content` lists (one per answer), against that raw JSON:
    bytes per token of each, the largest logprob error (nats) over the kept tokens, and how many positions keep
    the raw best token first. `table` and `size`: a side table already written (a release's, rows in `raws`'
    order) and its bytes on disk, instead of one built here; `raw_bytes`: what the server sent, instead of the
    `raws` as JSON."""
    if table is None:
        lps = [compact(r, k) for r in raws]
        table = side_table([f"r{i}" for i in range(len(raws))], [json.dumps({"m": {"logprobs": x}}) for x in lps])
    tokens = positions(table)
    err, top1 = agreement(table, raws)
    size = len(side_bytes(table)) if size is None else size
    raw_size = raw_bytes if raw_bytes is not None else \
        sum(len(json.dumps(r, ensure_ascii=False).encode("utf-8")) for r in raws)
    return {"k": k, "tokens": tokens, "bytes_per_token": size / tokens if tokens else None,
            "raw_json_bytes_per_token": raw_size / tokens if tokens else None,
            "max_error_nats": err, "top1_agree": top1}
