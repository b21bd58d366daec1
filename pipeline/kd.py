"""Soft targets for knowledge distillation, read from a release's teacher-logprob side files.

Reads a release folder written by `distill export --with-logprobs` (manifest.json and its
logprobs-<shard>.parquet files, see pipeline/logprobs.py) and a student tokenizer; gives,
per answer, the student token ids of the teacher's tokens and the teacher's top-k
distribution at each position, over student token ids. Writes nothing.

The teacher's tokens are kept as its token bytes, so the student must share the teacher's
tokenizer, and two checks refuse one that does not, in one line, before any distribution is
built (mapping distributions across vocabularies is a different method):

- vocabulary: every teacher token must be a student token;
- splitting (a tokenizer with `encode`, such as a Hugging Face one): the student, encoding the
  teacher's answer text, must cut it where the teacher's tokens do: of the token ends either
  makes, MIN_BOUNDARY_AGREEMENT must be ends of both. A tokenizer with the same pieces but
  other merges (or a larger vocabulary holding the teacher's) passes the first check and fails
  this one. The teacher's own tokenizer scores about 1 (a sampled answer may use a
  non-canonical split now and then).

A token whose identity the backend did not give (an empty token: llama-cpp-python renders
special tokens and tokens that split a UTF-8 character as "") is no student token: as an
alternative it is left out of the distribution (-1, -inf); as the generated token it ends the
answer there, since the student's input after it is unknown.

`gguf_student` loads the tokenizer (and weights) of a GGUF model, such as the embedded
teacher's, as a Hugging Face student (transformers' GGUF loader, which needs `gguf`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from . import logprobs as lpstore
from .errors import DatasetError, MissingExtra, import_extra
from .store import read_json

MIN_BOUNDARY_AGREEMENT = 0.9
GGUF_HINT = "loading a GGUF model as a student needs the gguf package: pip install gguf==0.19.0 (in distill's test extra)"


@dataclass
class SoftTargets:
    """One answer: `ids[t]` is the token the teacher generated at t, `top_ids[t, j]` its j-th alternative
    (-1 where it returned fewer than k), `top_logprobs[t, j]` that alternative's logprob (-inf where absent)."""
    id: str
    ids: np.ndarray            # int64 [T]
    top_ids: np.ndarray        # int64 [T, k]
    top_logprobs: np.ndarray   # float32 [T, k]
    cut: int = 0               # teacher positions dropped from the end: the first had no token identity


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
            if t and t not in vocab:
                missing[t] = None
        for top in r["top_token"]:
            for t in top:
                if t and t not in vocab:
                    missing[t] = None
    if missing:
        example = ", ".join(repr(b.decode("utf-8", "replace")) for b in list(missing)[:3])
        raise DatasetError(f"{release}: the student tokenizer lacks {len(missing):,} of the teacher's tokens "
                           f"(e.g. {example}); give a tokenizer with the teacher's vocabulary")
    if callable(getattr(tokenizer, "encode", None)):
        agree, ends = boundary_agreement(rows, tokenizer, vocab)
        if ends and agree < MIN_BOUNDARY_AGREEMENT * ends:
            raise DatasetError(f"{release}: the student tokenizer splits the teacher's answers differently: of the "
                               f"{ends:,} token ends that either makes, {agree:,} ({agree / ends:.0%}) are ends of "
                               f"both, {MIN_BOUNDARY_AGREEMENT:.0%} needed; give the teacher's tokenizer")
    return [_targets(r, vocab) for r in rows]


def _identified(tokens: list[bytes]) -> list[bytes]:
    """The generated tokens up to the first one without an identity (see module doc)."""
    return tokens[:tokens.index(b"")] if b"" in tokens else tokens


def boundary_agreement(rows: list[dict[str, Any]], tokenizer: Any, vocab: dict[bytes, int]) -> tuple[int, int]:
    """(byte offsets where both the teacher's tokens and the student's own encoding of the answer text end a
    token, offsets where either does) over side-file rows: how closely the student splits text as the teacher."""
    length = {i: len(b) for b, i in vocab.items()}
    agree = ends = 0
    for r in rows:
        tokens = _identified(r["token"])
        if not tokens:
            continue
        teacher = set(np.cumsum([len(t) for t in tokens]).tolist())
        ids = tokenizer.encode(b"".join(tokens).decode("utf-8", "replace"), add_special_tokens=False)
        student = set(np.cumsum([length.get(int(i), 0) for i in ids]).tolist())
        agree += len(teacher & student)
        ends += len(teacher | student)
    return agree, ends


def _targets(row: dict[str, Any], vocab: dict[bytes, int]) -> SoftTargets:
    tokens, _, top_tokens, top_lps = lpstore.decode_side_row(row)
    kept = _identified(tokens)
    n = len(kept)
    k = max((len(t) for t in top_tokens), default=0)
    top_ids = np.full((n, k), -1, np.int64)
    top_lp = np.full((n, k), -np.inf, np.float32)
    for t, (toks, lps) in enumerate(zip(top_tokens[:n], top_lps[:n])):
        known = [j for j, b in enumerate(toks) if b]
        top_ids[t, :len(known)] = [vocab[toks[j]] for j in known]
        top_lp[t, :len(known)] = lps[known]
    return SoftTargets(row["id"], np.array([vocab[b] for b in kept], np.int64), top_ids, top_lp, len(tokens) - n)


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


def release_messages(release: str | Path, split: str = "train") -> dict[str, list[dict[str, str]]]:
    """id -> `messages` of every row of `split`'s shards: the chat each teacher answer was generated in."""
    release = Path(release)
    out: dict[str, list[dict[str, str]]] = {}
    for f in read_json(release / "manifest.json").get("files", []):
        if f.get("split") == split:
            t = pq.read_table(release / f["path"], columns=["id", "messages"])
            out.update(zip(t.column("id").to_pylist(), t.column("messages").to_pylist()))
    return out


def gguf_student(path: str | Path, weights: bool = True) -> tuple[Any, Any]:
    """(Hugging Face tokenizer, causal LM or None) read from a GGUF file; the weights dequantised to float32."""
    import_extra("gguf", GGUF_HINT)
    transformers = import_extra("transformers", "the GGUF student needs transformers: pip install transformers")
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such GGUF file; give a GGUF model path")
    try:
        tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name) \
            if weights else None
    except (ValueError, OSError, KeyError, NotImplementedError) as e:
        raise MissingExtra(f"{path}: transformers cannot load this GGUF ({str(e).splitlines()[0]}); "
                           "pip install gguf==0.19.0, or give a GGUF of an architecture and quant type it reads") \
            from None
    return tok, model
