"""The ROUGE-L novelty filter: exact `rouge-score` decisions without a Python loop over the pool.

Reads instruction texts, keeps no files. `RougeIndex` holds the task pool
(seeds plus accepted machine instructions) tokenised once into integer ids.

Exactness. The score is the `rouge-score` package's rougeL F-measure with its
default tokenizer (lowercase, split on anything that is not [a-z0-9], no
stemmer): precision = LCS / len(pool item), recall = LCS / len(candidate),
F = 2*p*r / (p + r), computed with the same float64 operations in the same
order, so scores are bit-identical, not merely close (tests compare them with
`==` on real data).

Speed. Three layers, each unable to hide a true match:
1. Prefix filter (set-similarity join): F > t needs LCS >= t*n/(2-t) tokens
   for a text of n tokens, and LCS <= the multiset overlap of the two texts.
   Ordering token occurrences rarest first, two texts with overlap >= k share
   an element among their first n-k+1; so each pool item is indexed under its
   prefix only, and a candidate probes its own prefix. Common words are at the
   end of the order and are never probed.
2. Length bound: F <= 2*min(la, lb) / (la + lb).
3. Exact LCS, bit-parallel (`lcs.py`: one machine word holds a 64-token
   row of the DP table) in a numba kernel, only for the survivors.
`top_k` (the metadata kept for accepted instructions: most similar pool
items and the mean score) scans the whole pool with the same kernel, ~50 ns a
pair instead of ~50 us for rouge-score.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from .lcs import scores_long, scores_short

_TOKEN = re.compile(r"[a-z0-9]+")
_EPS = 1e-9  # bounds are compared with this slack, so float rounding can never prune a true match


def tokenize(text: str) -> list[str]:
    """rouge-score's default tokenizer (no stemming): lower(), then runs of [a-z0-9]."""
    # rouge-score lowercases, replaces [^a-z0-9]+ by spaces and splits on
    # whitespace: exactly the maximal [a-z0-9] runs of the lowercased text.
    return _TOKEN.findall(text.lower())


@dataclass
class Match:
    index: int     # position in the pool
    score: float   # exact rouge-score F-measure


class RougeIndex:
    """The task pool for the novelty filter. Items are only ever appended."""

    def __init__(self, threshold: float = 0.7):
        if not 0 < threshold <= 1:
            raise ValueError(f"ROUGE-L threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.texts: list[str] = []
        self._vocab: dict[str, int] = {}
        self._flat = np.zeros(1024, dtype=np.int32)
        self._off = np.zeros(1025, dtype=np.int64)
        self._n = 0
        self._df: list[int] = []               # pool items containing each token id
        self._rank: dict[int, int] = {}        # token id -> position in the global order
        self._next_new_rank = -1               # tokens unseen at the last re-ranking sort first
        self._postings: dict[tuple[int, int], list[int]] = {}
        self._ranked_at = 0                    # pool size when the order was last rebuilt
        self._mask = np.zeros(1024, dtype=np.uint64)
        self._slot = np.full(1024, -1, dtype=np.int32)
        self._all = np.arange(1024, dtype=np.int64)

    def __len__(self) -> int:
        return self._n

    # -- tokens -------------------------------------------------------------
    def ids(self, text: str) -> np.ndarray:
        """Token ids of `text` (new words get new ids)."""
        vocab = self._vocab
        out = []
        for tok in tokenize(text):
            tid = vocab.get(tok)
            if tid is None:
                tid = vocab[tok] = len(vocab)
                self._df.append(0)
            out.append(tid)
        if len(vocab) > self._mask.shape[0]:
            cap = max(len(vocab), 2 * self._mask.shape[0])
            self._mask = np.zeros(cap, dtype=np.uint64)
            self._slot = np.full(cap, -1, dtype=np.int32)
        return np.asarray(out, dtype=np.int32)

    def _min_overlap(self, n: int) -> int:
        # F > t with a text of n tokens needs LCS > t*n/(2-t) (the best case is
        # the other text being the LCS itself); the slack keeps it conservative.
        t = self.threshold - _EPS
        return max(1, math.ceil(t * n / (2 - t) - 1e-6))

    def _prefix(self, ids: np.ndarray) -> list[tuple[int, int]]:
        """The first n - k + 1 token occurrences of the text in the global (rarest-first) order."""
        n = len(ids)
        if n == 0:
            return []
        seen: dict[int, int] = {}
        elems = []
        rank = self._rank
        for tid in ids.tolist():
            occ = seen.get(tid, 0)
            seen[tid] = occ + 1
            r = rank.get(tid)
            if r is None:
                r = rank[tid] = self._next_new_rank
                self._next_new_rank -= 1
            elems.append((r, occ, tid))
        elems.sort()
        keep = n - self._min_overlap(n) + 1
        return [(tid, occ) for _, occ, tid in elems[:keep]]

    # -- pool -----------------------------------------------------------------
    def add(self, text: str) -> int:
        """Append `text` to the pool; returns its index."""
        ids = self.ids(text)
        i = self._n
        end = self._off[i] + len(ids)
        if end > self._flat.shape[0]:
            self._flat = np.resize(self._flat, max(end, 2 * self._flat.shape[0]))
        if i + 2 > self._off.shape[0]:
            self._off = np.resize(self._off, 2 * self._off.shape[0])
        self._flat[self._off[i]:end] = ids
        self._off[i + 1] = end
        self._n += 1
        self.texts.append(text)
        for tid in set(ids.tolist()):
            self._df[tid] += 1
        if self._n >= 2 * max(self._ranked_at, 64):
            self._rerank()   # the rarest-first order drifts as the pool grows: rebuild it
        else:
            for elem in self._prefix(ids):
                self._postings.setdefault(elem, []).append(i)
        return i

    def _rerank(self) -> None:
        order = sorted(range(len(self._df)), key=lambda t: (self._df[t], t))
        self._rank = {t: r for r, t in enumerate(order)}
        self._next_new_rank = -1
        self._postings = {}
        for i in range(self._n):
            for elem in self._prefix(self._flat[self._off[i]:self._off[i + 1]]):
                self._postings.setdefault(elem, []).append(i)
        self._ranked_at = self._n

    # -- scoring ----------------------------------------------------------------
    def _score(self, ids: np.ndarray, members: np.ndarray) -> np.ndarray:
        out = np.zeros(len(members), dtype=np.float64)
        if len(ids) == 0 or len(members) == 0:
            return out
        if len(ids) <= 64:
            scores_short(ids, members, self._flat, self._off, self._mask, out)
        else:
            scores_long(ids, members, self._flat, self._off, self._slot, out)
        return out

    def scores(self, text: str) -> np.ndarray:
        """Exact F-measure of `text` against every pool item, in pool order."""
        if self._all.shape[0] < self._n:
            self._all = np.arange(max(self._n, 2 * self._all.shape[0]), dtype=np.int64)
        return self._score(self.ids(text), self._all[:self._n])

    def candidates(self, ids: np.ndarray) -> np.ndarray:
        """Pool items that could score above the threshold (a superset of the true matches)."""
        la = len(ids)
        if la == 0:
            return np.zeros(0, dtype=np.int64)
        found: set[int] = set()
        postings = self._postings
        for elem in self._prefix(ids):
            p = postings.get(elem)
            if p:
                found.update(p)
        if not found:
            return np.zeros(0, dtype=np.int64)
        members = np.fromiter(found, dtype=np.int64, count=len(found))
        members.sort()
        lb = self._off[members + 1] - self._off[members]
        bound = 2.0 * np.minimum(la, lb) / (la + lb)
        return members[bound > self.threshold - _EPS]

    def most_similar(self, text: str) -> Match | None:
        """The best pool item scoring above the threshold, or None when `text` is novel."""
        ids = self.ids(text)
        members = self.candidates(ids)
        if len(members) == 0:
            return None
        s = self._score(ids, members)
        best = int(np.argmax(s))  # first of equal maxima: the earliest pool item
        if s[best] > self.threshold:
            return Match(int(members[best]), float(s[best]))
        return None

    def top_k(self, text: str, k: int) -> tuple[list[Match], float]:
        """The k most similar pool items (ties: earlier first) and the mean score over the pool."""
        s = self.scores(text)
        if len(s) == 0:
            return [], 0.0
        if k < len(s):
            # argpartition finds the k best without sorting the pool; the cut
            # score's ties are then resolved by pool order like a stable sort.
            cut = -np.partition(-s, k - 1)[k - 1]
            pick = np.concatenate([np.flatnonzero(s > cut), np.flatnonzero(s == cut)])[:k]
        else:
            pick = np.arange(len(s))
        order = sorted(pick.tolist(), key=lambda i: (-s[i], i))
        return [Match(int(i), float(s[i])) for i in order], float(s.mean())
