"""Shingle hash functions and datasketch's permutations, in plain Python (the reference).

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
import struct
from functools import lru_cache
from typing import Callable

import numpy as np

MERSENNE = (1 << 61) - 1
MAX_HASH = (1 << 32) - 1
M64 = (1 << 64) - 1
FNV_OFFSET = 0xCBF29CE484222325
TOKEN_MUL = 0x9E3779B97F4A7C15 | 1
COMBINE_SEED = 0x9E3779B97F4A7C15
COMBINE_MUL = 0xFF51AFD7ED558CCD
HASH_MODES = ("fast", "datasketch")


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
