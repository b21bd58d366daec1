"""Run the bad-input corpus (tests/bad_input_corpus.py) through the real CLI and tally the outcomes.

Reads nothing but the corpus; writes each case's files under a temporary folder that is removed after.
Prints one line per case that went wrong, then: "bad inputs tried: N, clear one-line errors: M, tracebacks: K".
Cases this machine cannot stage (a tmpfs mount without root, file modes as root) are counted as skipped.
Exit 0 when every case tried gave its documented exit code and first line, 1 otherwise.

    PYTHONPATH=. python scripts/chaos_bad_inputs.py [-k SUBSTRING]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bad_input_corpus import CASES, run_case, verify  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-k", default="", help="only the cases whose id contains this")
    args = ap.parse_args()
    tried = clear = tracebacks = skipped = 0
    for case in CASES:
        if args.k not in case.id:
            continue
        reason = case.needs() if case.needs else None
        if reason:
            skipped += 1
            continue
        tried += 1
        with tempfile.TemporaryDirectory(prefix=f"bad-{case.id}-") as d:
            try:
                res = run_case(case, Path(d))
                problems = verify(case, Path(d), res)
            except AssertionError as e:
                res, problems = None, [f"check failed: {e}"]
        if res is not None and (res.traceback or "Traceback" in res.err):
            tracebacks += 1
        if problems:
            print(f"{case.id}: " + " | ".join(p.splitlines()[0] if p.startswith("traceback") else p for p in problems))
        else:
            clear += 1
    print(f"bad inputs tried: {tried}, clear one-line errors: {clear}, tracebacks: {tracebacks}"
          + (f" ({skipped} skipped on this machine)" if skipped else ""))
    return 0 if clear == tried else 1


if __name__ == "__main__":
    sys.exit(main())
