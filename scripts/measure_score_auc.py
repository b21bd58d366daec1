"""How well each score ranks real rows above broken ones, on pairs built from real data (tests/score_pairs.py).

    python scripts/measure_score_auc.py [--n 40] [--n-wizard 40] [--modes length,relevance,rubric,deita]

Reads ../shared/data (or $DISTILL_SHARED_DATA); starts the embedded SmolLM2
server (llama.cpp, logits on) for the `rubric` and `deita` modes, which judge
with it: the Deita scorers themselves need a GPU and their weights. Prints one
line per mode: AUC of real over answer-swapped rows, of real over answers cut
to their first sentence, and of harder over easier WizardLM instructions
(0.5 is chance). Writes nothing. A ranking measure, not a timing: safe on a
loaded machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from score_pairs import alpaca_rows, difficulty_auc, quality_aucs, wizardlm_rows  # noqa: E402

from pipeline.config import TeacherSection  # noqa: E402
from pipeline.stages.score.combine import heuristic_score, relevances  # noqa: E402
from pipeline.stages.score.config import ScoreConfig  # noqa: E402
from pipeline.stages.score.judge import judge_rows  # noqa: E402
from pipeline.teacher import TeacherFactory  # noqa: E402


def judged(teacher, mode: str, judge: str):
    cfg = ScoreConfig(judge=mode, judges=[judge], combine=judge, judge_max_tokens=8)

    def score(rows):
        return [per[judge].value for per in judge_rows(rows, teacher, cfg, mode)]
    return score


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40, help="alpaca rows sampled (pairs: swapped n, cut up to n)")
    ap.add_argument("--n-wizard", type=int, default=40, help="WizardLM instructions sampled (all 218: 0)")
    ap.add_argument("--modes", default="length,relevance,rubric,deita")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    shared = Path(os.environ.get("DISTILL_SHARED_DATA", ROOT.parent / "shared" / "data"))
    if not shared.is_dir():
        sys.exit(f"shared data not found at {shared} (set DISTILL_SHARED_DATA)")
    rows = alpaca_rows(shared, args.n, args.seed)
    wiz = wizardlm_rows(shared, args.n_wizard or None, args.seed)
    modes = args.modes.split(",")
    server = teacher = None
    if {"rubric", "deita"} & set(modes):
        from pipeline.teacher.server import start_server
        server = start_server(n_threads=os.cpu_count() or 1, timeout_s=300)
        teacher = TeacherFactory(TeacherSection(backend="openai", base_url=server.base_url, concurrency=2,
                                                model="smollm2-135m-instruct", timeout_s=300, cache=False),
                                 ROOT, 0).build()
    print(f"pairs from {args.n} alpaca_helpfulness_2k rows and {len(wiz)} WizardLM instructions (seed {args.seed})")
    try:
        for mode in modes:
            t0 = time.monotonic()
            if mode == "length":
                def length(rs):
                    return [heuristic_score(r)[0] for r in rs]
                q, c = length, length
            elif mode == "relevance":
                from pipeline.embeddings.embedder import load_embedder
                enc = load_embedder("minilm")

                def q(rs):
                    return [heuristic_score(r, x)[0] for r, x in zip(rs, relevances(rs, enc))]
                c = None  # no answers in the WizardLM set: the same as length
            else:
                q, c = judged(teacher, mode, "quality"), judged(teacher, mode, "complexity")
            a = quality_aucs(q, rows)
            d = difficulty_auc(wiz, c(wiz)) if c is not None else float("nan")
            print(f"{mode:>10}: AUC real>swapped {a['swapped']:.3f}  real>cut {a['cut']:.3f}  "
                  f"harder>easier {d:.3f}   ({time.monotonic() - t0:.0f} s)", flush=True)
    finally:
        if teacher is not None:
            teacher.close()
        if server is not None:
            server.close()


if __name__ == "__main__":
    main()
