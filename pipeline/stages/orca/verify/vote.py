"""The vote over one row's n sampled answers: the target, which samples agree with it, the agreement rate.

Reads the normalised final answers of a row's samples (None where a sample states none, or failed) and the
row's normalised reference (None when it has none); returns a `Vote`. Writes nothing.

- With a reference, the target is the reference (rejection sampling against the label).
- Without one, the target is the most common answer when more than `majority` of the samples that state an
  answer give it (self-consistency, Wang et al. 2022: failed samples do not vote); a tie or a smaller share
  is no target, and every sample is dropped.

The agreement rate is the share of all n samples (failed ones included) that agree with the target.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .extract import MAX_TEXT_WORDS, agrees


@dataclass(frozen=True)
class Vote:
    target: str | None      # the answer a kept trace must give; None: no reference and no majority
    source: str             # "reference" | "majority" | "none"
    agreeing: tuple[bool, ...]  # per sample
    counts: dict[str, int]  # normalised answer -> samples that gave it

    @property
    def agreement(self) -> float:
        return sum(self.agreeing) / len(self.agreeing) if self.agreeing else 0.0


def vote(answers: list[str | None], reference: str | None, kind: str, *, majority: float = 0.5,
         max_text_words: int = MAX_TEXT_WORDS) -> Vote:
    counts = Counter(a for a in answers if a is not None)
    if reference is not None:
        target, source = reference, "reference"
    else:
        ranked = counts.most_common(2)
        top_share = ranked[0][1] / sum(counts.values()) if ranked else 0.0
        tie = len(ranked) > 1 and ranked[0][1] == ranked[1][1]
        target, source = (ranked[0][0], "majority") if ranked and not tie and top_share > majority else (None, "none")
    agreeing = tuple(agrees(a, target, kind, max_text_words) for a in answers)
    return Vote(target, source, agreeing, dict(counts.most_common()))
