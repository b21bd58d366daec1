"""The novelty monitor: novel rows per 1k generated, shard by shard, while a stage is still generating.

Reads nothing on disk and writes nothing: a generating stage (Self-Instruct)
hands it, in generation order, the texts the teacher wrote for each shard it
commits, and records the point it gets back in that shard's done marker and
its manifest. `[run] min_novelty` is the stop rule: once a shard's novel rows
per 1k generated fall under it, the stage stops generating (`below`).

A text is novel when no text fed before it (novel or not, from any earlier
shard or earlier in its own shard) is a MinHash near-duplicate of it. The
signature is the minhash stage's own (`[minhash]` unit, ngram,
fold_punctuation, hash, num_perm, seed), computed by that stage's kernel
(`phases.compute_signatures`) over each shard's texts at once; candidates are the earlier
texts that share a band with it under the stage's banding (threshold,
recall_at_threshold, bands: `choose_banding`), and a candidate counts when its
signature's Jaccard estimate is at least `threshold` (the stage's
`verify = "estimate"`: no shingle sets are held). On the same texts the
after-dedup curve (marginal.py: first of its minhash cluster, verified exactly)
and this count differ only by LSH's chance misses and the estimate's error near
the threshold; marginal.py says why, for Self-Instruct, they are not the same texts.

Memory: per text fed, its signature (num_perm 32-bit values in one growing
array: 512 bytes at 128) and, per band, one dict entry from a 64-bit hash of
the band's values to the text's position (a band hash shared by two texts
holds a list; a collision of the 64-bit hash only adds a candidate, which the
estimate then rejects). About 2.8 KB a text at the defaults (17 bands x 5 rows
at threshold 0.7; tracemalloc over 6,000 texts of 14 words; with datasketch's
`MinHashLSH` as the index it was 6.6 KB): some 60 MB for 20k generated rows and
2.8 GB for 1M: past a few million generated rows, a stage should sample. Texts themselves
are not kept.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import pyarrow as pa
from pydantic import ValidationError

from .errors import ConfigError
from .stages.minhash.candidates import choose_banding
from .stages.minhash.config import MinhashConfig
from .stages.minhash.phases import compute_signatures, normalize_array

DEFINITION = ("novel = no MinHash near-duplicate (the [minhash] section's shingles, signature and threshold; "
              "LSH candidates checked by the signature estimate) among every text generated before it")


class NoveltyMonitor:
    """Feed it one shard's generated texts at a time (`observe`); it answers that shard's point."""

    def __init__(self, minhash: MinhashConfig | dict[str, Any] | None = None, min_novelty: float | None = None):
        try:
            self.cfg = minhash if isinstance(minhash, MinhashConfig) else MinhashConfig(**(minhash or {}))
        except ValidationError as e:
            err = e.errors()[0]
            raise ConfigError(f"[minhash] {'.'.join(map(str, err['loc']))}: {err['msg']} (the novelty monitor of a "
                              "generating stage measures with this section); fix it in the config") from None
        self.min_novelty = min_novelty
        c = self.cfg
        self.banding = choose_banding(c.threshold, c.num_perm, c.recall_at_threshold, c.bands, c.rows_per_band)
        self.tables: list[dict[int, int | list[int]]] = [{} for _ in range(self.banding.bands)]
        self.fmt = c.signature_format()
        self.sigs = np.empty((1024, c.num_perm), dtype=np.uint32)  # row i: the i-th text fed
        self.fed = 0
        self.points: list[dict[str, Any]] = []

    def signatures(self, texts: list[str]) -> np.ndarray:
        """The minhash stage's signatures of `texts` (n x num_perm uint32), from its own kernel."""
        return compute_signatures(normalize_array(pa.array(texts, pa.large_string())), self.fmt)[0]

    def _band_keys(self, sig: np.ndarray) -> list[int]:
        r = self.banding.rows
        return [hash(sig[i * r:(i + 1) * r].tobytes()) for i in range(self.banding.bands)]

    def _novel(self, sig: np.ndarray, keys: list[int]) -> bool:
        """No earlier text shares a band with `sig` and estimates at least `threshold` against it."""
        seen: set[int] = set()
        for table, key in zip(self.tables, keys):
            hit = table.get(key)
            for j in () if hit is None else (hit if isinstance(hit, list) else (hit,)):
                if j not in seen:
                    seen.add(j)
                    if np.count_nonzero(self.sigs[j] == sig) / len(sig) >= self.cfg.threshold:
                        return False
        return True

    def _insert(self, sig: np.ndarray, keys: list[int]) -> None:
        if self.fed == len(self.sigs):
            self.sigs = np.concatenate([self.sigs, np.empty_like(self.sigs)])
        self.sigs[self.fed] = sig
        for table, key in zip(self.tables, keys):
            hit = table.get(key)
            if hit is None:
                table[key] = self.fed
            elif isinstance(hit, list):
                hit.append(self.fed)
            else:
                table[key] = [hit, self.fed]
        self.fed += 1

    def observe(self, texts: Iterable[str], label: Any = None) -> dict[str, Any] | None:
        """The point of one shard (None when it generated nothing): generated, novel, novel_per_1k and
        the running totals. Every text joins the index after it is judged."""
        texts = list(texts)
        n, novel = len(texts), 0
        for sig in self.signatures(texts) if texts else ():
            keys = self._band_keys(sig)
            novel += self._novel(sig, keys)
            self._insert(sig, keys)
        if n == 0:
            return None
        before = self.points[-1] if self.points else {"rows_generated": 0, "rows_novel": 0}
        point = {"point": f"shard {len(self.points)}" if label is None else label, "generated": n, "novel": novel,
                 "novel_per_1k": round(1000 * novel / n, 1), "rows_generated": before["rows_generated"] + n,
                 "rows_novel": before["rows_novel"] + novel}
        self.points.append(point)
        return point

    def below(self, point: dict[str, Any] | None) -> bool:
        """Whether `point` trips the stop rule (`min_novelty` set and its novelty under it)."""
        return point is not None and self.min_novelty is not None and point["novel_per_1k"] < self.min_novelty

    def stopped(self, point: dict[str, Any], stage: str) -> dict[str, Any]:
        """The `stopped` record a stage writes to its manifest when `point` tripped the rule."""
        return {"reason": "min_novelty", "stage": stage, "after": point["point"], "novel_per_1k": point["novel_per_1k"],
                "min_novelty": self.min_novelty, "rows_generated": point["rows_generated"],
                "message": f"{stage} stopped generating: its {point['point']} added {point['novel_per_1k']:g} novel "
                           f"rows per 1k generated, under [run] min_novelty = {self.min_novelty:g} "
                           f"({point['rows_generated']:,} rows generated)"}

    def summary(self) -> dict[str, Any]:
        """What the manifest records: the points, the rule and the definition."""
        return {"points": self.points, "min_novelty": self.min_novelty, "definition": DEFINITION,
                "threshold": self.cfg.threshold,
                "banding": {"bands": self.banding.bands, "rows_per_band": self.banding.rows}}
