"""What a row's MinHash signature is, in plain Python: its text, shingles, shingle hashes and permutations.

This module is the *definition*; `kernels.py` computes the same thing fast
over Arrow buffers and the tests hold the two equal. It reads nothing but
this Python's Unicode database (and the code-point tables cached from it).

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

Two hash modes, both 32-bit, both feeding datasketch's own permutation scheme
`((a * h + b) mod 2^64) mod (2^61 - 1) & (2^32 - 1)` with datasketch's
`(a, b)` drawn from `np.random.RandomState(seed)`:

- `datasketch`: the first 4 bytes of SHA-1 of the shingle bytes, little endian,
  which is datasketch's default `sha1_hash32`. A signature equals
  `datasketch.MinHash(num_perm, seed).update_batch(shingles)` bit for bit.
- `fast` (default): word shingles hash each token once (8 bytes at a time,
  multiply-xorshift), combine the n token hashes and finalise with the murmur3
  mixer, top 32 bits; char shingles hash their bytes the same way. Many times
  cheaper than SHA-1 and each token is read once instead of n times. It is
  still a function of the shingle bytes, so `datasketch.MinHash(...,
  hashfunc=hashfunc("fast", unit))` reproduces the signature exactly.

Signatures load as `datasketch.LeanMinHash(seed=seed, hashvalues=row)` in both
modes; only signatures made with the same mode, seed and shingling compare.
"""

from __future__ import annotations

import hashlib
import os
import struct
import sys
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ...store.atomic import atomic_write_npy

UNICODE_VERSION = unicodedata.unidata_version
TABLE_VERSION = 1  # bump when the table rules below change: it names the cached tables
# Code-point table: the low two bits are the separator class (0 word character,
# 1 always a separator: whitespace, controls; 2 punctuation, a separator when
# folding); bit 4 marks characters that can make a text not NFKC-normal
# (changed by NFKC, combining, or composing with the character before), so
# only texts holding one of them pay for Python's NFKC.
WORD, SPACE, PUNCT, CLASS_MASK, NEEDS_NFKC = 0, 1, 2, 3, 4

MERSENNE = (1 << 61) - 1
MAX_HASH = (1 << 32) - 1
M64 = (1 << 64) - 1
FNV_OFFSET = 0xCBF29CE484222325
TOKEN_MUL = 0x9E3779B97F4A7C15 | 1
COMBINE_SEED = 0x9E3779B97F4A7C15
COMBINE_MUL = 0xFF51AFD7ED558CCD
HASH_MODES = ("fast", "datasketch")


# -- text ----------------------------------------------------------------------

def _cached(name: str, build) -> np.ndarray:
    """A code-point table, built once per machine and Python Unicode version (building takes ~0.5 s,
    and every worker process needs the tables)."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "distill"
    path = root / f"minhash-{name}-{UNICODE_VERSION}-{TABLE_VERSION}.npy"
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        pass
    table = build()
    try:  # best effort: an unwritable cache only costs the rebuild
        atomic_write_npy(path, table)
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


# -- hashes and permutations ---------------------------------------------------

@lru_cache(maxsize=16)
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's (a, b) permutation parameters, drawn the way MinHash draws them."""
    gen = np.random.RandomState(seed)
    ab = np.array([(gen.randint(1, MERSENNE, dtype=np.uint64), gen.randint(0, MERSENNE, dtype=np.uint64))
                   for _ in range(num_perm)], dtype=np.uint64).T
    a, b = np.ascontiguousarray(ab[0]), np.ascontiguousarray(ab[1])
    a.setflags(write=False)
    b.setflags(write=False)
    return a, b


def sha1_hash32(data: bytes) -> int:
    return struct.unpack("<I", hashlib.sha1(data).digest()[:4])[0]


def token_hash64(data: bytes) -> int:
    """8 bytes at a time (little endian, last chunk zero-padded), then the length."""
    h = FNV_OFFSET
    for i in range(0, len(data), 8):
        h = ((h ^ int.from_bytes(data[i:i + 8], "little")) * TOKEN_MUL) & M64
        h ^= h >> 31
    h = ((h ^ len(data)) * TOKEN_MUL) & M64
    return h ^ (h >> 31)


def fmix64(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & M64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & M64
    h ^= h >> 33
    return h


def combine(token_hashes: list[int]) -> int:
    h = COMBINE_SEED
    for t in token_hashes:
        h = ((h ^ t) * COMBINE_MUL) & M64
        h ^= h >> 29
    return fmix64(h) >> 32


def fast_word_hash32(data: bytes) -> int:
    """Fast mode, word shingles: tokens are the space-separated parts of the shingle."""
    return combine([token_hash64(t) for t in data.split(b" ")])


def fast_char_hash32(data: bytes) -> int:
    """Fast mode, char shingles: the shingle bytes hashed as one piece."""
    return fmix64(token_hash64(data)) >> 32


def hashfunc(mode: str, unit: str = "word") -> Callable[[bytes], int]:
    """The `hashfunc` to give `datasketch.MinHash` so that it reproduces our signatures."""
    if mode == "datasketch":
        return sha1_hash32
    if mode == "fast":
        return fast_word_hash32 if unit == "word" else fast_char_hash32
    raise ValueError(f"hash mode must be one of {HASH_MODES}, not {mode!r}")


def signature(shingle_bytes: list[bytes], num_perm: int = 128, seed: int = 1,
              mode: str = "fast", unit: str = "word") -> np.ndarray:
    """Reference signature of one shingle list (slow; tests and tiny inputs only)."""
    a, b = permutations(num_perm, seed)
    sig = np.full(num_perm, MAX_HASH, dtype=np.uint64)
    h = hashfunc(mode, unit)
    with np.errstate(over="ignore"):
        for s in shingle_bytes:
            hv = np.uint64(h(s))
            sig = np.minimum(sig, ((a * hv + b) % np.uint64(MERSENNE)) & np.uint64(MAX_HASH))
    return sig.astype(np.uint32)
