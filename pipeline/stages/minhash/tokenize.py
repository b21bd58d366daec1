"""Compiled tokenising over UTF-8 bytes: the folded text, the fused fast word path, the NFKC pre-check.

The rules are text.py's (that module is the definition; the tests hold these
kernels equal to it). The code-point table's low two bits give the separator
class and bit 4 the needs-NFKC flag (text.separator_table).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .hashing import FNV_OFFSET, TOKEN_MUL

U64 = np.uint64
_FNV_OFF = U64(FNV_OFFSET)
_TMUL = U64(TOKEN_MUL)


@njit(cache=True, inline="always")
def _utf8_put(out, n, cp):
    """Write code point cp as UTF-8 at out[n:]; returns the byte count."""
    if cp < 0x80:
        out[n] = cp
        return 1
    if cp < 0x800:
        out[n] = 0xC0 | (cp >> 6)
        out[n + 1] = 0x80 | (cp & 0x3F)
        return 2
    if cp < 0x10000:
        out[n] = 0xE0 | (cp >> 12)
        out[n + 1] = 0x80 | ((cp >> 6) & 0x3F)
        out[n + 2] = 0x80 | (cp & 0x3F)
        return 3
    out[n] = 0xF0 | (cp >> 18)
    out[n + 1] = 0x80 | ((cp >> 12) & 0x3F)
    out[n + 2] = 0x80 | ((cp >> 6) & 0x3F)
    out[n + 3] = 0x80 | (cp & 0x3F)
    return 4


@njit(cache=True, inline="always")
def _utf8_get(data, i, end, c):
    """The code point starting with lead byte `c` at `i`, and its byte length; a sequence cut off
    at the row's `end` is one word byte run of the bytes left."""
    if c < 0xE0:
        length = 2
        cp = (np.int64(c & 0x1F) << 6) | np.int64(data[i + 1] & 0x3F)
    elif c < 0xF0:
        length = 3
        cp = (np.int64(c & 0x0F) << 12) | (np.int64(data[i + 1] & 0x3F) << 6) | np.int64(data[i + 2] & 0x3F)
    else:
        length = 4
        cp = ((np.int64(c & 0x07) << 18) | (np.int64(data[i + 1] & 0x3F) << 12)
              | (np.int64(data[i + 2] & 0x3F) << 6) | np.int64(data[i + 3] & 0x3F))
    if i + length > end:
        length = end - i
    return cp, length


@njit(cache=True, inline="always")
def _start_char(out, cps, n, ncp, pending_space):
    """Begin a kept character at out[n]: first the one space a run of separators folds to (never
    leading), then the character's start in `cps`; returns the new (n, ncp)."""
    if pending_space:
        cps[ncp] = n
        ncp += 1
        out[n] = 32
        n += 1
    cps[ncp] = n
    return n, ncp + 1


@njit(cache=True)
def fold_row(data, start, end, table, lower, fold_punct, asc, out, cps, n=0, ncp=0):
    """Write the folded, lowercased bytes of data[start:end] into `out`; code-point starts into `cps`.

    Returns (n_bytes, n_codepoints). `out` must hold 2 * (end - start) + 1 bytes
    (lowercasing can lengthen a character's UTF-8) and `cps` end - start + 2 items.
    `asc` is ascii_table(table, fold_punct). With n, ncp > 0 the text continues
    an earlier part already in `out` after a separator (the next column of the row).
    """
    pending_space = n > 0
    i = start
    while i < end:
        c = data[i]
        if c < 0x80:  # ASCII: the small table gives separator-or-lowercased byte
            v = asc[c]
            i += 1
            if v == 0:
                pending_space = n > 0
                continue
            n, ncp = _start_char(out, cps, n, ncp, pending_space)
            pending_space = False
            out[n] = v
            n += 1
            continue
        cp, length = _utf8_get(data, i, end, c)
        k = (table[cp] & 3) if cp < table.shape[0] else 0
        if k == 1 or (k == 2 and fold_punct):
            pending_space = n > 0
        else:
            n, ncp = _start_char(out, cps, n, ncp, pending_space)
            pending_space = False
            if length == 1:
                out[n] = c + 32 if 65 <= c <= 90 else c
                n += 1
            else:
                lc = lower[cp] if cp < lower.shape[0] else cp
                if lc != cp and length > 1:
                    n += _utf8_put(out, n, lc)
                else:
                    for j in range(length):
                        out[n + j] = data[i + j]
                    n += length
        i += length
    cps[ncp] = n
    return n, ncp


@njit(cache=True, inline="always")
def mix_chunk(h, chunk):
    h = (h ^ chunk) * _TMUL
    return h ^ (h >> U64(31))


@njit(cache=True)
def ascii_table(table, fold_punct):
    """Per ASCII byte: 0 for a separator, else the byte lowercased (NUL is a separator, so 0 is free).

    One small lookup replaces the UTF-8 decode and the 1.1 MB class table for
    the bytes most texts are made of.
    """
    out = np.zeros(128, np.uint8)
    for c in range(128):
        k = table[c] & 3
        if not (k == 1 or (k == 2 and fold_punct)):
            out[c] = c + 32 if 65 <= c <= 90 else c
    return out


@njit(cache=True, inline="always")
def _end_token(h, chunk, sh, ln, tokh, nt):
    """Close the token being hashed (if any) into tokh[nt]; returns the reset state and the new count."""
    if ln > 0:
        if sh > U64(0):
            h = mix_chunk(h, chunk)
        tokh[nt] = mix_chunk(h, U64(ln))
        return _FNV_OFF, U64(0), U64(0), 0, nt + 1
    return h, chunk, sh, ln, nt


@njit(cache=True, inline="always")
def _push_byte(h, chunk, sh, ln, b):
    """Add one byte of the current token: eight bytes make a 64-bit chunk, mixed into the hash."""
    chunk |= U64(b) << sh
    sh += U64(8)
    ln += 1
    if sh == U64(64):
        h = mix_chunk(h, chunk)
        chunk = U64(0)
        sh = U64(0)
    return h, chunk, sh, ln


@njit(cache=True)
def fast_word_tokens(data, start, end, table, lower, fold_punct, asc, tokh, tmp):
    """Fast mode, word unit, fused: fold and hash every token in one pass; returns the token count.

    Same tokens and bytes as fold_row (lowercased, separators dropped),
    hashed as hashing.token_hash64 while they stream by. `asc` is
    ascii_table(table, fold_punct); `tmp`: 4 bytes of scratch.
    """
    nt = 0
    h = _FNV_OFF
    chunk = U64(0)
    sh = U64(0)  # bit position of the next byte in `chunk`
    ln = 0
    i = start
    while i < end:
        c = data[i]
        if c < 0x80:  # ASCII: one table lookup, no decoding (~1.6x faster on English text)
            v = asc[c]
            i += 1
            if v == 0:
                h, chunk, sh, ln, nt = _end_token(h, chunk, sh, ln, tokh, nt)
            else:
                h, chunk, sh, ln = _push_byte(h, chunk, sh, ln, v)
            continue
        cp, length = _utf8_get(data, i, end, c)
        cls = (table[cp] & 3) if cp < table.shape[0] else 0
        if cls == 1 or (cls == 2 and fold_punct):
            h, chunk, sh, ln, nt = _end_token(h, chunk, sh, ln, tokh, nt)
        else:
            lc = lower[cp] if cp < lower.shape[0] else cp
            if lc != cp:
                nb = _utf8_put(tmp, 0, lc)
            else:
                nb = length
                for j in range(length):
                    tmp[j] = data[i + j]
            for j in range(nb):
                h, chunk, sh, ln = _push_byte(h, chunk, sh, ln, tmp[j])
        i += length
    h, chunk, sh, ln, nt = _end_token(h, chunk, sh, ln, tokh, nt)
    return nt


@njit(cache=True)
def needs_nfkc(offsets, data, table, flag):
    """Rows holding a code point flagged in `table` (text.NEEDS_NFKC); ASCII bytes are skipped."""
    n = offsets.shape[0] - 1
    out = np.zeros(n, np.bool_)
    for r in range(n):
        i = offsets[r]
        end = offsets[r + 1]
        while i < end:
            c = data[i]
            if c < 0x80:
                i += 1
                continue
            if c < 0xE0:
                cp = (np.int64(c & 0x1F) << 6) | np.int64(data[i + 1] & 0x3F) if i + 1 < end else np.int64(c)
                i += 2
            elif c < 0xF0:
                cp = ((np.int64(c & 0x0F) << 12) | (np.int64(data[i + 1] & 0x3F) << 6) | np.int64(data[i + 2] & 0x3F)
                      if i + 2 < end else np.int64(c))
                i += 3
            else:
                cp = ((np.int64(c & 0x07) << 18) | (np.int64(data[i + 1] & 0x3F) << 12)
                      | (np.int64(data[i + 2] & 0x3F) << 6) | np.int64(data[i + 3] & 0x3F)) if i + 3 < end else np.int64(c)
                i += 4
            if cp < table.shape[0] and (table[cp] & flag):
                out[r] = True
                break
    return out
