"""SHA-1 of a byte range, compiled: datasketch's default shingle hash (`sha1_hash32`) without hashlib.

Calling hashlib once per shingle from Python costs ~0.4 us of interpreter
overhead per call, more than the hash itself; this scalar implementation runs
inside the row loop. Only the first 32 bits of the digest are returned, in the
byte order datasketch reads them.
"""

from __future__ import annotations

import numpy as np
from numba import njit

U64 = np.uint64
_M32 = U64(0xFFFFFFFF)


@njit(cache=True, inline="always")
def _round(a, b, c, d, e, f, k, wt):
    return (((((a << U64(5)) | (a >> U64(27))) & _M32) + f + e + k + wt) & _M32,
            a, ((b << U64(30)) | (b >> U64(2))) & _M32, c, d)


@njit(cache=True)
def _sha1_32(buf, start, length, w):
    """First 4 digest bytes of SHA-1(buf[start:start+length]) as a little-endian uint32.

    `w` is scratch of at least 80 + 16 * ceil((length + 9) / 64) words: the
    schedule in w[:80], the padded message (big-endian words) after it.
    """
    nblocks = (length + 9 + 63) // 64
    msg = w[80:80 + 16 * nblocks]
    msg[:] = 0
    for p in range(length):  # bytes into big-endian words: no per-byte padding branches
        msg[p >> 2] |= U64(buf[start + p]) << U64(24 - 8 * (p & 3))
    msg[length >> 2] |= U64(0x80) << U64(24 - 8 * (length & 3))
    bitlen = U64(length) * U64(8)
    msg[16 * nblocks - 1] = bitlen & _M32
    msg[16 * nblocks - 2] = bitlen >> U64(32)
    h0 = U64(0x67452301)
    h1 = U64(0xEFCDAB89)
    h2 = U64(0x98BADCFE)
    h3 = U64(0x10325476)
    h4 = U64(0xC3D2E1F0)
    for blk in range(nblocks):
        for t in range(16):
            w[t] = msg[blk * 16 + t]
        for t in range(16, 80):
            x = w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16]
            w[t] = ((x << U64(1)) | (x >> U64(31))) & _M32
        a, b, c, d, e = h0, h1, h2, h3, h4
        for t in range(0, 20):
            a, b, c, d, e = _round(a, b, c, d, e, (b & c) | ((~b) & d & _M32), U64(0x5A827999), w[t])
        for t in range(20, 40):
            a, b, c, d, e = _round(a, b, c, d, e, b ^ c ^ d, U64(0x6ED9EBA1), w[t])
        for t in range(40, 60):
            a, b, c, d, e = _round(a, b, c, d, e, (b & c) | (b & d) | (c & d), U64(0x8F1BBCDC), w[t])
        for t in range(60, 80):
            a, b, c, d, e = _round(a, b, c, d, e, b ^ c ^ d, U64(0xCA62C1D6), w[t])
        h0 = (h0 + a) & _M32
        h1 = (h1 + b) & _M32
        h2 = (h2 + c) & _M32
        h3 = (h3 + d) & _M32
        h4 = (h4 + e) & _M32
    # digest()[:4] is h0 big-endian; datasketch unpacks it little-endian.
    return (((h0 & U64(0xFF)) << U64(24)) | (((h0 >> U64(8)) & U64(0xFF)) << U64(16))
            | (((h0 >> U64(16)) & U64(0xFF)) << U64(8)) | (h0 >> U64(24)))
