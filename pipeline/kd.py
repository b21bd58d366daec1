"""Soft targets for knowledge distillation, read from a release's teacher-logprob side files.

Reads a release folder written by `distill export --with-logprobs` (manifest.json and its
logprobs-<shard>.parquet files, see pipeline/logprobs.py) and a student tokenizer; gives,
per answer, the student token ids of the teacher's tokens and the teacher's top-k
distribution at each position, over student token ids. Writes nothing.

The teacher's tokens are kept as its token bytes, so the student must share the teacher's
vocabulary: a student tokenizer that lacks a teacher token is refused, in one line, before
any distribution is built (mapping distributions across vocabularies is a different method).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from . import logprobs as lpstore
from .errors import DatasetError
from .store import read_json


@dataclass
class SoftTargets:
    """One answer: `ids[t]` is the token the teacher generated at t, `top_ids[t, j]` its j-th alternative
    (-1 where it returned fewer than k), `top_logprobs[t, j]` that alternative's logprob (-inf where absent)."""
    id: str
    ids: np.ndarray            # int64 [T]
    top_ids: np.ndarray        # int64 [T, k]
    top_logprobs: np.ndarray   # float32 [T, k]


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet, reversed: the printable character each byte is written as."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def vocab_bytes(tokenizer: Any) -> dict[bytes, int]:
    """token bytes -> id for a student tokenizer: a mapping already in that form, or a Hugging Face tokenizer
    (byte-level BPE pieces such as 'Ġthe', SentencePiece pieces such as '▁the' and '<0x0A>', added tokens as text)."""
    if isinstance(tokenizer, Mapping):
        return {bytes(k) if not isinstance(k, str) else k.encode("utf-8"): int(v) for k, v in tokenizer.items()}
    vocab = tokenizer.get_vocab()
    added = set(getattr(tokenizer, "get_added_vocab", dict)())
    dec = _byte_decoder()
    # One scheme per tokenizer: SentencePiece pieces such as '▁café' are UTF-8, not GPT-2's byte alphabet.
    byte_level = not any("▁" in p for p in vocab if p not in added)
    out: dict[bytes, int] = {}
    for piece, i in vocab.items():
        if piece in added:
            b = piece.encode("utf-8")
        elif len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            b = bytes([int(piece[3:5], 16)])
        elif byte_level and all(c in dec for c in piece):
            b = bytes(dec[c] for c in piece)
        else:
            b = piece.replace("▁", " ").encode("utf-8")
        out.setdefault(b, i)
    return out


def side_files(release: str | Path, split: str = "train") -> list[Path]:
    release = Path(release)
    manifest = release / "manifest.json"
    if not manifest.exists():
        raise DatasetError(f"{release}: no manifest.json; give a release folder written by `distill export`")
    lp = read_json(manifest).get("logprobs")
    if not lp:
        raise DatasetError(f"{release}: the release has no teacher logprobs; export it with `distill export --with-logprobs`")
    return [release / f["path"] for f in lp["files"] if f["shard"].startswith(split + "-")]


def load_soft_targets(release: str | Path, tokenizer: Any, split: str = "train") -> list[SoftTargets]:
    """Every answer of `split` that has teacher logprobs, over the student `tokenizer`'s ids (see module doc)."""
    files = side_files(release, split)
    vocab = vocab_bytes(tokenizer)
    rows = [r for f in files for r in pq.read_table(f).to_pylist() if r["token"] is not None]
    missing: dict[bytes, None] = {}
    for r in rows:
        for t in r["token"]:
            if t not in vocab:
                missing[t] = None
        for top in r["top_token"]:
            for t in top:
                if t not in vocab:
                    missing[t] = None
    if missing:
        example = ", ".join(repr(b.decode("utf-8", "replace")) for b in list(missing)[:3])
        raise DatasetError(f"{release}: the student tokenizer lacks {len(missing):,} of the teacher's tokens "
                           f"(e.g. {example}); give a tokenizer with the teacher's vocabulary")
    return [_targets(r, vocab) for r in rows]


def _targets(row: dict[str, Any], vocab: dict[bytes, int]) -> SoftTargets:
    tokens, _, top_tokens, top_lps = lpstore.decode_side_row(row)
    k = max((len(t) for t in top_tokens), default=0)
    top_ids = np.full((len(tokens), k), -1, np.int64)
    top_lp = np.full((len(tokens), k), -np.inf, np.float32)
    for t, (toks, lps) in enumerate(zip(top_tokens, top_lps)):
        top_ids[t, :len(toks)] = [vocab[b] for b in toks]
        top_lp[t, :len(toks)] = lps
    return SoftTargets(row["id"], np.array([vocab[b] for b in tokens], np.int64), top_ids, top_lp)


def batches(targets: list[SoftTargets], size: int) -> Iterator[list[SoftTargets]]:
    for i in range(0, len(targets), size):
        yield targets[i: i + size]


def teacher_vocab(release: str | Path, split: str = "train") -> dict[bytes, int]:
    """Every token the release's side files name, numbered in order of appearance: a vocabulary for a toy
    student when no tokenizer of the teacher's is at hand (scripts/kd_example.py)."""
    vocab: dict[bytes, int] = {}
    for f in side_files(release, split):
        for r in pq.read_table(f).to_pylist():
            if r["token"] is None:
                continue
            for t in r["token"]:
                vocab.setdefault(t, len(vocab))
            for top in r["top_token"]:
                for t in top:
                    vocab.setdefault(t, len(vocab))
    return vocab
