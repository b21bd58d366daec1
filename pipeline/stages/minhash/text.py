"""What text a row is deduplicated on, how it is normalised, and its shingles (reference version).

This module is the *definition* of the shingle set; `kernels.py` computes the
same thing fast over Arrow buffers and the tests hold the two equal.

1. The text is the configured columns (default instruction, input, output),
   nulls as '', joined with a newline.
2. Unicode NFKC, then lowercase by the simple (one character to one
   character) case mapping, both from Python's `unicodedata` database, whose
   version the manifest records. The kernel lowercases as it tokenises, from
   `lowercase_table()`; NFKC runs only on texts holding a character that NFKC
   could change (`NEEDS_NFKC`), so ASCII and ordinary accented text skip it. Rows that are pure ASCII skip both (NFKC is the identity on
   ASCII; the kernel lowercases ASCII itself), which is what makes it cheap.
3. Separators: whitespace, control/format characters and (when
   `fold_punctuation`) punctuation, i.e. Unicode categories Z*, C* and P*.
   Symbols (S*: `+ = $`) stay part of words: `x+y` and `x-y` must differ.
4. Word mode: tokens are maximal runs of non-separators; shingles are n
   consecutive tokens joined by one space, as UTF-8 bytes. A text with
   0 < k < n tokens has one shingle (all k tokens); an empty text has none.
   Char mode (for CJK and other unsegmented scripts): separator runs fold to
   one space, the text is trimmed, and shingles are n consecutive code points.
"""

from __future__ import annotations

import sys
import unicodedata
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

UNICODE_VERSION = unicodedata.unidata_version
TABLE_VERSION = 1  # bump when the table rules below change: it names the cached tables
# Code-point table: the low two bits are the separator class (0 word character,
# 1 always a separator: whitespace, controls; 2 punctuation, a separator when
# folding); bit 4 marks characters that can make a text not NFKC-normal
# (changed by NFKC, combining, or composing with the character before), so
# only texts holding one of them pay for Python's NFKC.
WORD, SPACE, PUNCT, CLASS_MASK, NEEDS_NFKC = 0, 1, 2, 3, 4


def _cached(name: str, build) -> np.ndarray:
    """A code-point table, built once per machine and Python Unicode version (building takes ~0.5 s,
    and every worker process needs the tables)."""
    import os
    import tempfile
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "distill"
    path = root / f"minhash-{name}-{UNICODE_VERSION}-{TABLE_VERSION}.npy"
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        pass
    table = build()
    try:  # best effort: an unwritable cache only costs the rebuild
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{path.name}.")
        with os.fdopen(fd, "wb") as f:
            np.save(f, table, allow_pickle=False)
        os.replace(tmp, path)
    except OSError:
        pass
    return table


@lru_cache(maxsize=1)
def separator_table() -> np.ndarray:
    """uint8 class of every code point (1.1 MB), from this Python's Unicode database."""
    return _cached("classes", _build_separator_table)


def _build_separator_table() -> np.ndarray:
    table = np.zeros(sys.maxunicode + 1, dtype=np.uint8)
    cat, comb, dec, nfkc = unicodedata.category, unicodedata.combining, unicodedata.decomposition, unicodedata.normalize
    second: set[int] = set()
    for cp in range(sys.maxunicode + 1):
        ch = chr(cp)
        c = cat(ch)[0]
        if c == "Z" or c == "C":
            # Cn (unassigned) and Co (private use) are 'C' too; treating them as
            # separators is harmless and keeps the rule one letter long.
            table[cp] = SPACE
        elif c == "P":
            table[cp] = PUNCT
        if comb(ch):
            table[cp] |= NEEDS_NFKC
        d = dec(ch)
        if d:
            if nfkc("NFKC", ch) != ch:
                table[cp] |= NEEDS_NFKC
            parts = d.split()
            if not d.startswith("<") and len(parts) == 2:
                second.add(int(parts[1], 16))  # composes with the character before it
    for cp in second:
        table[cp] |= NEEDS_NFKC
    table[0x1100:0x1200] |= NEEDS_NFKC  # Hangul jamo compose algorithmically
    return table


@lru_cache(maxsize=1)
def lowercase_table() -> np.ndarray:
    """int32 simple lowercase code point of every code point (4.4 MB)."""
    return _cached("lower", _build_lowercase_table)


def _build_lowercase_table() -> np.ndarray:
    table = np.arange(sys.maxunicode + 1, dtype=np.int32)
    for cp in range(sys.maxunicode + 1):
        low = chr(cp).lower()
        if len(low) == 1:
            table[cp] = ord(low)
    table[0x130] = ord("i")  # the one full mapping to two characters; its simple mapping is 'i'
    return table


def join_columns(table: pa.Table | pa.RecordBatch, columns: list[str]) -> pa.Array:
    """The dedup text of every row: the columns (nulls as '') joined by a newline."""
    arrays = []
    for c in columns:
        col = table.column(c)
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        arrays.append(pc.fill_null(col.cast(pa.large_string()), ""))
    if len(arrays) == 1:
        return arrays[0]
    return pc.binary_join_element_wise(*arrays, pa.scalar("\n", pa.large_string()))


def normalize_array(text: pa.Array) -> pa.Array:
    """NFKC for the rows that need it (lowercasing is the kernel's job).

    NFKC is Python's `unicodedata`, applied only to texts holding a character
    flagged NEEDS_NFKC: Arrow's utf8_normalize was ~10x slower, and a Python
    call per non-ASCII row cost more than the MinHash itself.
    """
    from .tokenize import needs_nfkc

    text = text.cast(pa.large_string())
    if len(text) == 0:
        return text
    bufs = text.buffers()
    if bufs[2] is None:
        return text
    offsets = np.frombuffer(bufs[1], np.int64)[text.offset:text.offset + len(text) + 1]
    need = needs_nfkc(offsets, np.frombuffer(bufs[2], np.uint8), separator_table(), NEEDS_NFKC)
    if not need.any():
        return text
    idx = np.flatnonzero(need)
    nfkc = unicodedata.normalize
    fixed = pa.array([nfkc("NFKC", s) for s in text.take(pa.array(idx)).to_pylist()], pa.large_string())
    return pc.replace_with_mask(text, pa.array(need), fixed)


def normalize(text: str) -> str:
    """One text, normalised by the definition (NFKC, then simple lowercase)."""
    low = lowercase_table()
    return "".join(chr(low[ord(c)]) for c in unicodedata.normalize("NFKC", text))


def tokens(norm: str, fold_punctuation: bool = True) -> list[str]:
    table = separator_table()
    out, cur = [], []
    for ch in norm:
        k = table[ord(ch)] & CLASS_MASK
        if k == SPACE or (k == PUNCT and fold_punctuation):
            if cur:
                out.append("".join(cur))
                cur = []
        else:
            cur.append(ch)
    if cur:
        out.append("".join(cur))
    return out


def shingles(text: str, *, ngram: int = 5, unit: str = "word", fold_punctuation: bool = True,
             normalized: bool = False) -> list[bytes]:
    """The shingles of one text, in order (duplicates kept), as the bytes that get hashed."""
    norm = text if normalized else normalize(text)
    toks = tokens(norm, fold_punctuation)
    if unit == "word":
        if not toks:
            return []
        if len(toks) < ngram:
            return [" ".join(toks).encode()]
        return [" ".join(toks[i:i + ngram]).encode() for i in range(len(toks) - ngram + 1)]
    if unit != "char":
        raise ValueError(f"unit must be 'word' or 'char', not {unit!r}")
    folded = " ".join(toks)
    if not folded:
        return []
    if len(folded) < ngram:
        return [folded.encode()]
    return [folded[i:i + ngram].encode() for i in range(len(folded) - ngram + 1)]
