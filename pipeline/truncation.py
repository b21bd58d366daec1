"""The truncation counters of an answering stage and the manifest's `truncation` block.

Reads and writes nothing: `count` adds a shard's `truncation_*` counters (summed across shards into
the manifest's totals by the store), `summary` turns the totals into the block
`{answers, truncated_first, retried, still_truncated, rate, rate_after_retry}`. The retry itself is
teacher/truncation_retry.py. Kept free of imports so the store can use it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

# Counter names in a shard's stats (summed across shards into manifest totals).
KEYS = ("answers", "truncated_first", "retried", "still_truncated")
PREFIX = "truncation_"


def count(attempts: list[list[Any]], stats: Counter) -> None:
    """Per row, its completions in order (first answer, then the retry if any); rows not answered are skipped."""
    for k in KEYS:
        stats[PREFIX + k] += 0  # present even at zero: the manifest says the stage counted
    for tries in attempts:
        if not tries[0].ok:
            continue
        stats[PREFIX + "answers"] += 1
        if tries[0].truncated:
            stats[PREFIX + "truncated_first"] += 1
            if len(tries) > 1:
                stats[PREFIX + "retried"] += 1
            if tries[-1].truncated or not tries[-1].ok:
                stats[PREFIX + "still_truncated"] += 1


def summary(totals: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest's `truncation` block from summed counters; None when the stage counted none.

    `rate`: share of answers cut off at the first budget; `rate_after_retry`: share still cut off."""
    if PREFIX + "answers" not in totals:
        return None
    got = {k: int(totals.get(PREFIX + k, 0)) for k in KEYS}
    n = got["answers"]
    got["rate"] = round(got["truncated_first"] / n, 4) if n else 0.0
    got["rate_after_retry"] = round(got["still_truncated"] / n, 4) if n else 0.0
    return got
