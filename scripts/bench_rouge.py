"""The ROUGE-L filter side by side with rouge-score at a 5,000-instruction pool (a short run of
bench_self_instruct.py; run that one for the 50,000 pool).

    flock /tmp/distill-heavy.lock python scripts/bench_rouge.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_self_instruct import main  # noqa: E402

if __name__ == "__main__":
    main(["--sizes", "5000", *sys.argv[1:]])
