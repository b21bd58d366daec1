"""Compiled kernels over Arrow buffers: fold text, hash shingles, MinHash, band keys, Jaccard.

Why numba: the work is byte loops (UTF-8 decoding, tokenising, hashing) and a
128-wide multiply-mod-min per shingle. Python-fed MinHash tops out near 12k
rows/s per core because of the per-token interpreter cost; numba compiles these
loops to machine code (the permutation loop vectorises to AVX-512 here) with
no C toolchain on the user's machine, and its on-disk cache makes the second
process start in well under a second. Everything reads the Arrow string
columns' offsets and data buffers directly: no Python string per row, and no
joined copy of the text columns (the kernel walks them in turn).

The folded buffer of a row is its NFKC text lowercased (text.lowercase_table)
with every separator run replaced by one space, trimmed. In it, a word shingle is
one contiguous byte range (tokens are joined by single spaces), and so is a
char shingle; both hash modes hash exactly those bytes (see hashing.py).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .hashing import COMBINE_MUL, COMBINE_SEED, FNV_OFFSET, MAX_HASH, MERSENNE
from .sha1 import _sha1_32
from .tokenize import ascii_table, fast_word_tokens, fold_row, mix_chunk

U64 = np.uint64
_MAX = U64(MAX_HASH)
_P = U64(MERSENNE)
_S61 = U64(61)
_FNV_OFF = U64(FNV_OFFSET)
_CSEED = U64(COMBINE_SEED)
_CMUL = U64(COMBINE_MUL)
_MIX1 = U64(0xFF51AFD7ED558CCD)
_MIX2 = U64(0xC4CEB9FE1A85EC53)

MODE_FAST, MODE_SHA1 = 0, 1
UNIT_WORD, UNIT_CHAR = 0, 1


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
    """hashing.token_hash64 of buf[s:e]."""
    h = _FNV_OFF
    i = s
    while i < e:
        chunk = U64(0)
        for k in range(min(8, e - i)):
            chunk |= U64(buf[i + k]) << U64(8 * k)
        h = mix_chunk(h, chunk)
        i += 8
    return mix_chunk(h, U64(e - s))


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
    """32-bit hashes of the row's shingles into `out` (same order as text.shingles); returns the count."""
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
def _row_hashes(data, s, e, table, lower, fold_punct, asc, ngram, unit, mode, buf, cps, hv, tokh, w):
    """The row's shingle hashes into hv; the fused path for the default (fast, word)."""
    if unit == UNIT_WORD and mode == MODE_FAST:
        nt = fast_word_tokens(data, s, e, table, lower, fold_punct, asc, tokh, buf)
        return _combine_tokens(tokh, nt, ngram, hv)
    nb, ncp = fold_row(data, s, e, table, lower, fold_punct, asc, buf, cps)
    return row_shingle_hashes(buf, nb, cps, ncp, ngram, unit, mode, hv, tokh, w)


@njit(cache=True)
def _row_hashes_cols(offs, datas, r, table, lower, fold_punct, asc, ngram, unit, mode, buf, cps, hv, tokh, w):
    """_row_hashes of row r of the columns joined by a newline, without joining them.

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
    buf = np.empty(2 * maxlen + 8, np.uint8)
    cps = np.empty(maxlen + 2, np.int64)
    hv = np.empty(maxlen + 1, np.uint64)
    tokh = np.empty(maxlen + 2, np.uint64)
    w = np.empty(80 + 16 * ((2 * maxlen + 9 + 63) // 64), np.uint64)  # SHA-1 schedule + message
    sig = np.empty(P, np.uint64)
    asc = ascii_table(table, fold_punct)
    pos = 0
    if want_sets:
        set_indptr[0] = 0
    for r in range(n):
        i = alt_row[r]
        if i >= 0:
            m = _row_hashes(alt_data, alt_offsets[i], alt_offsets[i + 1], table, lower, fold_punct, asc, ngram, unit,
                            mode, buf, cps, hv, tokh, w)
        else:
            m = _row_hashes_cols(offs, datas, r, table, lower, fold_punct, asc, ngram, unit, mode, buf, cps, hv, tokh, w)
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
    buf = np.empty(2 * maxlen + 8, np.uint8)
    cps = np.empty(maxlen + 2, np.int64)
    hv = np.empty(maxlen + 1, np.uint64)
    tokh = np.empty(maxlen + 2, np.uint64)
    w = np.empty(80 + 16 * ((2 * maxlen + 9 + 63) // 64), np.uint64)  # SHA-1 schedule + message
    values = np.empty(total, np.uint32)
    indptr = np.zeros(rows.shape[0] + 1, np.int64)
    asc = ascii_table(table, fold_punct)
    pos = 0
    for i in range(rows.shape[0]):
        r = rows[i]
        m = _row_hashes(data, offsets[r], offsets[r + 1], table, lower, fold_punct, asc, ngram, unit, mode, buf, cps, hv, tokh, w)
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
