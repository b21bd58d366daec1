"""The ROUGE-L novelty filter against the `rouge-score` package: identical scores and decisions."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.stages.self_instruct.rouge import RougeIndex, tokenize

rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer", reason="pip install rouge-score (the test extra)")
SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def ref(candidate: str, other: str) -> float:
    # The paper scores scorer.score(new_instruction, pool_item)
    return SCORER.score(candidate, other)["rougeL"].fmeasure


def real_instructions(root: Path) -> list[str]:
    out = [json.loads(line)["instruction"] for line in open(root / "self_instruct_seed_tasks.jsonl")]
    out += [r["instruction"] for r in json.loads((root / "dolly_3k.json").read_text())]
    out += [r["instruction"] for r in json.loads((root / "alpaca_helpfulness_2k.json").read_text())]
    out += [json.loads(line)["Instruction"] for line in open(root / "wizardlm_testset_218.jsonl")]
    return out


def perturb(text: str, rng: random.Random) -> str:
    """A near copy: drop, duplicate or swap one word, or change case and punctuation."""
    words = text.split()
    op = rng.randrange(4)
    if op == 0 and len(words) > 2:
        del words[rng.randrange(len(words))]
    elif op == 1:
        i = rng.randrange(len(words))
        words.insert(i, words[i])
    elif op == 2 and len(words) > 1:
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    else:
        return text.upper().replace(",", " ;")
    return " ".join(words)


def test_tokenizer_matches_rouge_score():
    from rouge_score import tokenize as rs_tok
    samples = ["Hello, World! It's 3.14 -- naïve café", "İstanbul KELVIN \u212a test", "", "   ", "a_b-c/d", "日本語 text 123abc"]
    for s in samples:
        assert tokenize(s) == rs_tok.tokenize(s, None)


@pytest.mark.realdata
def test_scores_identical_to_rouge_score_on_real_pairs(shared_data):
    """Every pair (thousands) gets the same float, bit for bit, including >64-token texts."""
    texts = real_instructions(shared_data)
    rng = random.Random(0)
    pool = rng.sample(texts, 400)
    idx = RougeIndex(0.7)
    for t in pool:
        idx.add(t)
    long = [t for t in texts if len(tokenize(t)) > 64][:4]
    cands = rng.sample(texts, 12) + [perturb(t, rng) for t in rng.sample(pool, 6)] + long
    assert long, "the real data should hold some long instructions"
    n = 0
    for c in cands:
        got = idx.scores(c)
        want = np.array([ref(c, t) for t in pool])
        assert np.array_equal(got, want), c
        n += len(pool)
    assert n >= 8000


@pytest.mark.realdata
def test_decisions_identical_on_a_growing_pool(shared_data):
    """The filter as the stage runs it: real instructions and perturbed copies arrive one by one;
    each is accepted iff rouge-score's max F over the current pool is <= 0.7."""
    texts = real_instructions(shared_data)
    rng = random.Random(1)
    idx = RougeIndex(0.7)
    pool: list[str] = []
    for t in texts[:150]:
        idx.add(t)
        pool.append(t)
    stream = []
    for t in rng.sample(texts[150:], 120):
        stream.append(t)
        stream.append(perturb(rng.choice(pool + stream), rng))
    rejected = accepted = 0
    for c in stream:
        scores = [ref(c, p) for p in pool]
        truth_reject = max(scores) > 0.7
        match = idx.most_similar(c)
        assert (match is not None) == truth_reject, c
        if match is not None:
            assert match.score == max(scores) and pool[match.index] == pool[scores.index(max(scores))]
            rejected += 1
        else:
            top, mean = idx.top_k(c, 10)
            assert [m.score for m in top] == sorted(scores, reverse=True)[:10]
            assert mean == pytest.approx(float(np.mean(scores)), abs=1e-12)
            idx.add(c)
            pool.append(c)
            accepted += 1
    assert rejected > 30 and accepted > 100   # the test exercises both outcomes


def test_threshold_ties_follow_rouge_score():
    """Pairs whose rational F is exactly 0.7 must be decided as rouge-score's float says."""
    base = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    idx = RougeIndex(0.7)
    other = " ".join(base[:7] + ["x1", "x2", "x3"])       # LCS 7 of 10 and 10: F = 0.7 exactly
    idx.add(other)
    cand = " ".join(base)
    want = ref(cand, other)
    match = idx.most_similar(cand)
    assert (match is not None) == (want > 0.7)
    assert idx.scores(cand)[0] == want


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.sampled_from("a b c d e f g h".split()), min_size=0, max_size=90),
                min_size=1, max_size=25),
       st.lists(st.sampled_from("a b c d e f g h".split()), min_size=0, max_size=90),
       st.sampled_from([0.3, 0.5, 0.7, 0.9]))
def test_pruning_never_hides_a_match(pool_words, cand_words, threshold):
    """Small vocabularies make many near matches: the pruned search equals brute force."""
    idx = RougeIndex(threshold)
    pool = [" ".join(w) for w in pool_words]
    for t in pool:
        idx.add(t)
    cand = " ".join(cand_words)
    brute = [ref(cand, p) for p in pool]
    assert list(idx.scores(cand)) == brute
    match = idx.most_similar(cand)
    assert (match is not None) == (max(brute) > threshold)
    if match is not None:
        assert match.score == max(brute)


def test_pool_survives_reranking_as_it_grows():
    """The rarest-first order is rebuilt as the pool doubles; matches stay findable."""
    rng = random.Random(5)
    vocab = [f"w{i}" for i in range(300)]
    texts = [" ".join(rng.choices(vocab, k=rng.randint(4, 20))) for _ in range(700)]
    idx = RougeIndex(0.7)
    for t in texts:
        idx.add(t)
    for t in rng.sample(texts, 60):
        near = t + " extra"
        brute = idx.scores(near)
        match = idx.most_similar(near)
        assert (match is not None) == (brute.max() > 0.7)


def test_bad_threshold_is_refused():
    with pytest.raises(ValueError):
        RougeIndex(0)
