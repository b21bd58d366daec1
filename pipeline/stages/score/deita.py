"""Deita's trained scorers (Liu et al., 2023): their prompt format and how a score is read from one token.

Reads the templates `prompts/judge/deita_complexity.txt` and
`deita_quality.txt`, byte for byte the format the scorers were trained on
(hkust-nlp/deita `selection/scorer`: "...##Query: {instruction}  \\n##Complexity: "
and "...#Question#:\\n{instruction}\\n#Response#:\\n{output} \\n##Quality: ").
Writes nothing.

The request is a raw text completion (no chat template) with `max_tokens=1`
and top-k logprobs. The score is Deita's expected value
sum(i * p_i) over i = 1..6, where Deita softmaxes the logits of the six
tokens "1".."6" at the first generated position. A softmax over six logits
equals their probabilities renormalised over those six, so with top-k
logprobs (k = 20 on OpenAI-compatible servers) we renormalise over the ones
that appear. Tokens are matched exactly ("1", not " 1"), as Deita matches
token ids. When none of the six is among the top k, Deita's own code returns
3.0; we return no score (the row stays, unscored and flagged): a made-up 3.0
would rank a row the scorer never rated.
"""

from __future__ import annotations

import math
from typing import Any

from ...prompts import load_template

TEMPLATES = {"complexity": "judge/deita_complexity.txt", "quality": "judge/deita_quality.txt"}
SCORE_TOKENS = ("1", "2", "3", "4", "5", "6")


def render_prompt(judge: str, instruction: str, output: str) -> str:
    """The scorer's prompt for one row; `instruction` is the user turn (instruction and input)."""
    tpl = load_template(TEMPLATES[judge])
    if judge == "complexity":
        return tpl.render(instruction=instruction)
    return tpl.render(instruction=instruction, output=output)


def score_distribution(logprobs: list[dict[str, Any]] | None) -> tuple[dict[str, float] | None, str]:
    """({"1": p1, ...} renormalised over the score tokens present, "") at the first generated position,
    or (None, why) when there is no first position or none of "1".."6" is among its top tokens."""
    if not logprobs:
        return None, "no logprobs in the reply (the Deita scorers are read from the first token's logprobs)"
    first = logprobs[0]
    top = first.get("top_logprobs") or []
    pairs = list(top.items()) if isinstance(top, dict) else [(t.get("token"), t.get("logprob")) for t in top]
    if first.get("token") is not None and first.get("logprob") is not None:
        pairs.append((first["token"], first["logprob"]))
    found: dict[str, float] = {}
    for token, lp in pairs:
        if token in SCORE_TOKENS and lp is not None:
            found[token] = float(lp)  # the same token twice (top list and chosen) has one logprob
    if not found:
        return None, f"none of the score tokens 1-6 among the first token's top {len(top)} logprobs"
    peak = max(found.values())
    weights = {t: math.exp(lp - peak) for t, lp in found.items()}  # a softmax over the logprobs present
    total = sum(weights.values())
    return {t: w / total for t, w in weights.items()}, ""


def expected_value(logprobs: list[dict[str, Any]] | None) -> tuple[float | None, str]:
    """(Deita's score sum(i * p_i), "") or (None, why): see the module docstring."""
    dist, why = score_distribution(logprobs)
    if dist is None:
        return None, why
    return sum(int(t) * p for t, p in dist.items()), ""
