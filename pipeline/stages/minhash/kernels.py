"""Compiled kernels over Arrow buffers: fold and tokenise text, hash shingles, MinHash, band keys.

Why numba: the work is byte loops (UTF-8 decoding, tokenising, hashing) and a
128-wide multiply-mod-min per shingle. Python-fed MinHash tops out near 12k
rows/s per core because of the per-token interpreter cost; numba compiles these
loops to machine code (the permutation loop vectorises to AVX-512 here) with
no C toolchain on the user's machine, and its on-disk cache makes the second
process start in well under a second. Everything reads the Arrow string
columns' offsets and data buffers directly: no Python string per row, and no
joined copy of the text columns (the kernel walks them in turn).

The rules are signatures.py's (that module is the definition; the tests hold
these kernels equal to it). The code-point table's low two bits give the
separator class and bit 4 the needs-NFKC flag (signatures.separator_table).
The folded buffer of a row is its NFKC text lowercased
(signatures.lowercase_table) with every separator run replaced by one space,
trimmed. In it, a word shingle is one contiguous byte range (tokens are joined
by single spaces), and so is a char shingle; both hash modes hash exactly
those bytes.

SHA-1 (datasketch's default shingle hash, `sha1_hash32`) is compiled here too:
calling hashlib once per shingle from Python costs ~0.4 us of interpreter
overhead per call, more than the hash itself; the scalar implementation below
runs inside the row loop.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .signatures import COMBINE_MUL, COMBINE_SEED, FNV_OFFSET, MAX_HASH, MERSENNE, TOKEN_MUL

U64 = np.uint64
_M32 = U64(0xFFFFFFFF)
_MAX = U64(MAX_HASH)
_P = U64(MERSENNE)
_S61 = U64(61)
_FNV_OFF = U64(FNV_OFFSET)
_TMUL = U64(TOKEN_MUL)
_CSEED = U64(COMBINE_SEED)
_CMUL = U64(COMBINE_MUL)
_MIX1 = U64(0xFF51AFD7ED558CCD)
_MIX2 = U64(0xC4CEB9FE1A85EC53)

MODE_FAST, MODE_SHA1 = 0, 1
UNIT_WORD, UNIT_CHAR = 0, 1


# -- UTF-8 text: fold, tokenise, the NFKC pre-check ------------------------------

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
def _mix_chunk(h, chunk):
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
            h = _mix_chunk(h, chunk)
        tokh[nt] = _mix_chunk(h, U64(ln))
        return _FNV_OFF, U64(0), U64(0), 0, nt + 1
    return h, chunk, sh, ln, nt


@njit(cache=True, inline="always")
def _push_byte(h, chunk, sh, ln, b):
    """Add one byte of the current token: eight bytes make a 64-bit chunk, mixed into the hash."""
    chunk |= U64(b) << sh
    sh += U64(8)
    ln += 1
    if sh == U64(64):
        h = _mix_chunk(h, chunk)
        chunk = U64(0)
        sh = U64(0)
    return h, chunk, sh, ln


@njit(cache=True)
def fast_word_tokens(data, start, end, table, lower, fold_punct, asc, tokh, tmp):
    """Fast mode, word unit, fused: fold and hash every token in one pass; returns the token count.

    Same tokens and bytes as fold_row (lowercased, separators dropped),
    hashed as signatures.token_hash64 while they stream by. `asc` is
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
    """Rows holding a code point flagged in `table` (signatures.NEEDS_NFKC); ASCII bytes are skipped."""
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

# -- SHA-1 ------------------------------------------------------------------------

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

# -- shingle hashes, MinHash, band keys ---------------------------------------------

@njit(cache=True, inline="always")
def _fmix64(h):
    h ^= h >> U64(33)
    h *= _MIX1
    h ^= h >> U64(33)
    h *= _MIX2
    h ^= h >> U64(33)
    return h


@njit(cache=True)
def _tok_hash(buf, s, e):
    """signatures.token_hash64 of buf[s:e]."""
    h = _FNV_OFF
    i = s
    while i < e:
        chunk = U64(0)
        for k in range(min(8, e - i)):
            chunk |= U64(buf[i + k]) << U64(8 * k)
        h = _mix_chunk(h, chunk)
        i += 8
    return _mix_chunk(h, U64(e - s))


@njit(cache=True)
def _combine_tokens(tokh, nt, ngram, out):
    # Token-position-outer, shingle-inner: each pass is one multiply-xorshift
    # over all shingles, which LLVM vectorises; per shingle, the n steps are a
    # dependent chain that left the multiplier idle.
    m = nt - ngram + 1 if nt >= ngram else (1 if nt > 0 else 0)
    span = ngram if nt >= ngram else nt
    for i in range(m):
        out[i] = _CSEED
    for j in range(span):
        for i in range(m):
            h = (out[i] ^ tokh[i + j]) * _CMUL
            out[i] = h ^ (h >> U64(29))
    for i in range(m):
        out[i] = _fmix64(out[i]) >> U64(32)
    return m


@njit(cache=True)
def row_shingle_hashes(buf, nbytes, cps, ncp, ngram, unit, mode, out, tokh, w):
    """32-bit hashes of the row's shingles into `out` (same order as signatures.shingles); returns the count."""
    if nbytes == 0:
        return 0
    if unit == UNIT_CHAR:
        m = ncp - ngram + 1 if ncp >= ngram else 1
        for i in range(m):
            s = cps[i]
            e = cps[i + ngram] if ncp >= ngram else nbytes
            if mode == MODE_SHA1:
                out[i] = _sha1_32(buf, s, e - s, w)
            else:
                out[i] = _fmix64(_tok_hash(buf, s, e)) >> U64(32)
        return m
    # word mode: token boundaries from the folded bytes (spaces separate tokens)
    nt = 0
    s = 0
    for i in range(nbytes + 1):
        if i == nbytes or buf[i] == 32:
            cps[nt] = s  # reuse cps: token starts
            tokh[nt] = U64(i)  # token end, as uint64 until hashed below
            nt += 1
            s = i + 1
    m = nt - ngram + 1 if nt >= ngram else 1
    span = ngram if nt >= ngram else nt
    if mode == MODE_SHA1:
        for i in range(m):
            s0 = cps[i]
            e0 = np.int64(tokh[i + span - 1])
            out[i] = _sha1_32(buf, s0, e0 - s0, w)
        return m
    for t in range(nt):
        tokh[t] = _tok_hash(buf, cps[t], np.int64(tokh[t]))
    return _combine_tokens(tokh, nt, ngram, out)


@njit(cache=True)
def _row_hashes(offs, datas, r, table, lower, fold_punct, asc, ngram, unit, mode, buf, cps, hv, tokh, w):
    """The shingle hashes of row r of the columns joined by a newline into hv, without joining them;
    the fused path for the default (fast, word).

    A newline is always a separator, so the joined text's tokens are the
    columns' tokens one after the other, and its folded bytes are the columns'
    folded bytes joined by one space (fold_row continues across columns).
    """
    if unit == UNIT_WORD and mode == MODE_FAST:
        nt = 0
        for c in range(len(datas)):
            nt += fast_word_tokens(datas[c], offs[c][r], offs[c][r + 1], table, lower, fold_punct, asc, tokh[nt:], buf)
        return _combine_tokens(tokh, nt, ngram, hv)
    nb = 0
    ncp = 0
    for c in range(len(datas)):
        nb, ncp = fold_row(datas[c], offs[c][r], offs[c][r + 1], table, lower, fold_punct, asc, buf, cps, nb, ncp)
    return row_shingle_hashes(buf, nb, cps, ncp, ngram, unit, mode, hv, tokh, w)


@njit(cache=True)
def _minhash_into(hv, m, a, b, sig):
    # Permutation-outer, shingle-inner: the inner loop is a min-reduction that
    # LLVM vectorises (vpmullq on AVX-512); ~2x faster than shingle-outer.
    P = a.shape[0]
    for k in range(P):
        ak = a[k]
        bk = b[k]
        best = _MAX
        for i in range(m):
            x = ak * hv[i] + bk  # wraps mod 2^64, exactly as datasketch's uint64 numpy does
            x = (x & _P) + (x >> _S61)  # Mersenne reduction: x mod (2^61 - 1) up to one subtraction
            x = min(x, x - _P)  # subtract P when x >= P (otherwise x - P wraps above x)
            best = min(best, x & _MAX)
        sig[k] = best


@njit(cache=True)
def _append_set(hv, m, values, pos):
    """Append the sorted distinct values of hv[:m] at values[pos:]; returns the new end."""
    if m == 0:
        return pos
    srt = np.sort(hv[:m])
    last = srt[0]
    values[pos] = np.uint32(last)
    pos += 1
    for j in range(1, m):
        if srt[j] != last:
            last = srt[j]
            values[pos] = np.uint32(last)
            pos += 1
    return pos


@njit(cache=True)
def _row_scratch(maxlen):
    """Buffers for one row of at most maxlen bytes: folded bytes, code-point starts, shingle hashes,
    token hashes, and the SHA-1 schedule + message."""
    return (np.empty(2 * maxlen + 8, np.uint8), np.empty(maxlen + 2, np.int64), np.empty(maxlen + 1, np.uint64),
            np.empty(maxlen + 2, np.uint64), np.empty(80 + 16 * ((2 * maxlen + 9 + 63) // 64), np.uint64))


@njit(cache=True)
def signatures(offs, datas, alt_row, alt_offsets, alt_data, table, lower, fold_punct, ngram, unit, mode, a, b,
               sigs, nshingles, set_indptr, set_values):
    """MinHash every row of Arrow (large_)string columns joined by a newline: sigs[n, P] uint32, shingle counts.

    `offs`/`datas` are the columns' offsets and bytes (tuples). A row with
    alt_row[r] >= 0 is read instead from the text alt_data[alt_offsets[i]:alt_offsets[i + 1]],
    i = alt_row[r] (its NFKC-normalised joined text). When set_indptr has
    n + 1 items, the rows' shingle hashes are also written as CSR (raw: in text
    order, repeats kept) for exact verification later; returns how many values that used.
    """
    n = offs[0].shape[0] - 1
    P = a.shape[0]
    want_sets = set_indptr.shape[0] == n + 1
    maxlen = 16
    for r in range(n):
        if alt_row[r] >= 0:
            ln = alt_offsets[alt_row[r] + 1] - alt_offsets[alt_row[r]]
        else:
            ln = len(datas)  # the separators
            for c in range(len(datas)):
                ln += offs[c][r + 1] - offs[c][r]
        if ln > maxlen:
            maxlen = ln
    buf, cps, hv, tokh, w = _row_scratch(maxlen)
    sig = np.empty(P, np.uint64)
    asc = ascii_table(table, fold_punct)
    pos = 0
    if want_sets:
        set_indptr[0] = 0
    for r in range(n):
        i = alt_row[r]
        if i >= 0:
            m = _row_hashes((alt_offsets,), (alt_data,), i, table, lower, fold_punct, asc, ngram, unit, mode,
                            buf, cps, hv, tokh, w)
        else:
            m = _row_hashes(offs, datas, r, table, lower, fold_punct, asc, ngram, unit, mode, buf, cps, hv, tokh, w)
        nshingles[r] = m
        _minhash_into(hv, m, a, b, sig)
        for k in range(P):
            sigs[r, k] = np.uint32(sig[k])
        if want_sets:  # raw hashes, kept for the candidate rows' exact verification
            for j in range(m):
                set_values[pos + j] = np.uint32(hv[j])
            pos += m
            set_indptr[r + 1] = pos
    return pos


@njit(cache=True)
def shingle_sets(offsets, data, rows, table, lower, fold_punct, ngram, unit, mode):
    """Sorted distinct shingle hashes of the selected rows, as CSR (indptr, values uint32)."""
    maxlen = 16
    total = 0
    for r in rows:
        ln = offsets[r + 1] - offsets[r]
        total += ln + 1
        if ln > maxlen:
            maxlen = ln
    buf, cps, hv, tokh, w = _row_scratch(maxlen)
    values = np.empty(total, np.uint32)
    indptr = np.zeros(rows.shape[0] + 1, np.int64)
    asc = ascii_table(table, fold_punct)
    pos = 0
    for i in range(rows.shape[0]):
        r = rows[i]
        m = _row_hashes((offsets,), (data,), r, table, lower, fold_punct, asc, ngram, unit, mode, buf, cps, hv, tokh, w)
        pos = _append_set(hv, m, values, pos)
        indptr[i + 1] = pos
    return indptr, values[:pos].copy()


@njit(cache=True)
def band_keys(sigs, bands, rows_per_band, out):
    """out[band, row]: a 64-bit hash of each band's slice of the signature (bands x n, band-major)."""
    n = sigs.shape[0]
    for r in range(n):
        for bd in range(bands):
            h = _CSEED ^ U64(bd)
            for j in range(rows_per_band):
                h = (h ^ U64(sigs[r, bd * rows_per_band + j])) * _CMUL
                h ^= h >> U64(29)
            out[bd, r] = _fmix64(h)
