"""The hard flag as later stages read it: selection's `hard` stratum and the dataset card's hard share.

Reads a row's meta JSON (meta.hard, written by stage.py) or a hard manifest's totals; writes nothing.
"""

from __future__ import annotations

import json
from typing import Any

STRATA = ("hard", "easy", "none")  # judged hard, judged not hard, never judged (no answer, unparseable, new rows)


def stratum(meta: str | None) -> str:
    """"hard", "easy" or "none" for one row's meta JSON string."""
    if not meta:
        return "none"
    try:
        verdict = (json.loads(meta).get("hard") or {}).get("hard")
    except (ValueError, AttributeError):
        return "none"
    return "none" if verdict is None else ("hard" if verdict else "easy")


def share(totals: dict[str, Any]) -> dict[str, int]:
    """The counts a hard manifest's totals hold: judged, hard, and the new instructions after each kind."""
    return {k: int(totals.get(k, 0)) for k in ("judged", "hard", "generated_hard", "generated_easy")}
