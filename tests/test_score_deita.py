"""Deita's scorers as Deita runs them: the exact prompt format, one token, the expected value over "1".."6".

Against loopback stand-ins for vLLM servers running hkust-nlp/deita-quality-scorer
and deita-complexity-scorer (tests/deita_standin.py), through the whole teacher
stack (cache, breaker, length guard); the path for real against llama.cpp's
/v1/completions (the embedded SmolLM2, `teacher_server`); and the choice of
judge mode.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from deita_standin import DeitaStandIn

from pipeline.config import Config, TeacherSection
from pipeline.context import RunContext
from pipeline.errors import ConfigError, TeacherUnavailable
from pipeline.records import get_meta, new_row
from pipeline.stages.score import cli as score_cli
from pipeline.stages.score.config import ScoreConfig, judge_mode
from pipeline.stages.score.stage import run_score
from pipeline.store import Dataset, DatasetWriter
from pipeline.teacher import TeacherFactory
from pipeline.teacher.base import ChatRequest, Sampling, completion_request, request_key

# Deita's two templates (hkust-nlp/deita, src/deita/selection/scorer/llama_scorer.py), written out here
# independently of prompts/judge/deita_*.txt so a changed template file fails this test.
DEITA_COMPLEXITY = ("You are a helpful assistant. Please identify the complexity score of the following user query. "
                    "\n##Query: {instruction}  \n##Complexity: ")
DEITA_QUALITY = ("You are a helpful assistant. Please identify the quality score of the Response corresponding to "
                 "the Question. \n #Question#:\n{instruction}\n#Response#:\n{output} \n##Quality: ")

ROWS = [
    ("Give three tips for staying healthy.", "", "1. Eat vegetables.\n2. Sleep well.\n3. Walk daily."),
    ("Translate to French.", "Good morning", "Bonjour"),
    ("Name a primary colour.", "", "Red."),
]

# first-token logprobs the stand-ins give, best first: digits mixed with tokens that are not scores
# (" 4" with a space, "7", "The"), which Deita's token-id lookup never reads either
QUALITY_TOP = [("5", -0.4), ("4", -1.3), ("The", -1.9), (" 4", -2.2), ("6", -2.6), ("3", -3.1), ("7", -3.5),
               ("2", -4.0), ("1", -5.2)]
COMPLEXITY_TOP = [("2", -0.7), ("3", -0.9), ("1", -2.5), ("4", -3.0), ("5", -4.4), ("6", -6.1)]


def deita_softmax_score(top: list[tuple[str, float]]) -> float:
    """Deita's maths, written as Deita writes it: softmax over the six score tokens' values, times 1..6."""
    lp = dict(top)
    logits = np.array([lp[str(i)] for i in range(1, 7)])
    p = np.exp(logits - logits.max())
    p /= p.sum()
    return float((p * np.arange(1, 7)).sum())


def scored_dataset(path, rows=ROWS):
    w = DatasetWriter(path, "import")
    w.write_shard(0, [new_row(i, inp, out, origin="seed") for i, inp, out in rows])
    w.write_manifest()
    return path


def deita_cfg(quality: DeitaStandIn, complexity: DeitaStandIn, **kw) -> ScoreConfig:
    return ScoreConfig(
        gates=["empty"],
        judge_teacher=TeacherSection(backend="openai", base_url=quality.base_url, model=quality.model,
                                     max_retries=0, timeout_s=10),
        judge_overrides={"complexity": {"base_url": complexity.base_url, "model": complexity.model}}, **kw)


def deita_ctx(tmp_path) -> RunContext:
    return RunContext(run_id="d", workdir=tmp_path / "work", progress=False)


def test_deita_scorers_get_deitas_exact_prompt_and_one_token_and_the_score_is_deitas_expected_value(tmp_path):
    with DeitaStandIn("hkust-nlp/deita-quality-scorer", lambda p: QUALITY_TOP) as q, \
            DeitaStandIn("hkust-nlp/deita-complexity-scorer", lambda p: COMPLEXITY_TOP) as c:
        m = run_score(scored_dataset(tmp_path / "in"), tmp_path / "out", deita_cfg(q, c), deita_ctx(tmp_path))
    assert m["score_source"] == "deita"  # judge = "auto" with Deita scorer models
    assert set(m["judge_teacher"]) == {"quality", "complexity"}
    # only text completions were sent (a chat request would have been a 400), each as Deita sends it
    assert set(q.paths) == set(c.paths) == {"/v1/completions"}
    sent_q = {b["prompt"] for b in q.bodies if b["prompt"] != "Reply with the word: ready"}  # the ping aside
    sent_c = {b["prompt"] for b in c.bodies if b["prompt"] != "Reply with the word: ready"}
    requests = [f"{i}\n\n{inp}" if inp else i for i, inp, _ in ROWS]
    assert sent_q == {DEITA_QUALITY.format(instruction=r, output=o) for r, (_, _, o) in zip(requests, ROWS)}
    assert sent_c == {DEITA_COMPLEXITY.format(instruction=r) for r in requests}
    for b in q.bodies + c.bodies:
        if b["prompt"] in sent_q | sent_c:
            assert b["max_tokens"] == 1 and b["logprobs"] == 20 and b["temperature"] == 0 and "messages" not in b
    want_q, want_c = deita_softmax_score(QUALITY_TOP), deita_softmax_score(COMPLEXITY_TOP)
    rows = Dataset(tmp_path / "out").read().to_pylist()
    assert len(rows) == 3
    for r in rows:
        assert r["quality"] == pytest.approx(want_q, abs=1e-4) and r["complexity"] == pytest.approx(want_c, abs=1e-4)
        assert r["score"] == pytest.approx(r["quality"] * r["complexity"])
        meta = get_meta(r, "score")
        assert meta["score_source"] == "deita" and meta["judgments"]["quality"]["method"] == "deita"
        assert meta["judge_model"] == {"quality": "hkust-nlp/deita-quality-scorer",
                                       "complexity": "hkust-nlp/deita-complexity-scorer"}


def test_top_k_missing_score_tokens_renormalise_and_none_present_leaves_the_row_unscored(tmp_path):
    # "Red." gets a first token whose top 20 hold no score digit at all; "Bonjour" only two of the six
    def quality(prompt: str):
        if "Red." in prompt:
            return [("The", -0.1), (" 5", -2.0), ("five", -3.0)]
        if "Bonjour" in prompt:
            return [("4", -0.2), ("Sure", -1.0), ("6", -1.7)]
        return QUALITY_TOP
    with DeitaStandIn("deita-quality-scorer", quality) as q, DeitaStandIn("deita-complexity-scorer",
                                                                        lambda p: COMPLEXITY_TOP) as c:
        m = run_score(scored_dataset(tmp_path / "in"), tmp_path / "out", deita_cfg(q, c), deita_ctx(tmp_path))
    rows = {r["output"]: r for r in Dataset(tmp_path / "out").read().to_pylist()}
    p4, p6 = math.exp(-0.2), math.exp(-1.7)
    assert rows["Bonjour"]["quality"] == pytest.approx((4 * p4 + 6 * p6) / (p4 + p6), abs=1e-4)
    red = rows["Red."]
    assert red["quality"] is None and red["score"] is None  # never Deita's made-up 3.0
    assert red["flags"] == ["judge_unparseable:quality", "unscored"]
    assert "none of the score tokens" in get_meta(red, "score")["judgments"]["quality"]["reason"]
    assert m["totals"]["judge_unparseable[quality]"] == 1 and m["totals"]["unscored"] == 1


def test_a_scorer_that_fails_outside_the_row_leaves_the_shard_unanswered_and_a_rerun_uses_the_cache(tmp_path):
    down = {"on": True}
    with DeitaStandIn("deita-quality-scorer", lambda p: QUALITY_TOP,
                      fail=lambda p: 503 if down["on"] and "Bonjour" in p else None) as q, \
            DeitaStandIn("deita-complexity-scorer", lambda p: COMPLEXITY_TOP) as c:
        src, out = scored_dataset(tmp_path / "in"), tmp_path / "out"
        with pytest.raises(TeacherUnavailable, match="1 rows in 1 shard.*unanswered .server_error: 1"):
            run_score(src, out, deita_cfg(q, c), deita_ctx(tmp_path))  # exit 4, and the row is no drop
        assert not (out / "_done" / "part-00000.json").exists() and not (out / "rejected").exists()
        down["on"] = False
        before = len(q.bodies) + len(c.bodies)
        m = run_score(src, out, deita_cfg(q, c), deita_ctx(tmp_path))
        assert m["rows_out"] == 3
        # answered requests came from the response cache: only the failed one (and the two pings) was sent again
        assert len(q.bodies) + len(c.bodies) - before == 3


def test_a_text_completion_has_its_own_cache_key():
    s = Sampling(temperature=0.0, max_tokens=1, logprobs=20)
    chat = ChatRequest(messages=[{"role": "user", "content": "##Query: hi"}], sampling=s, record_id="r", purpose="p")
    text = completion_request("##Query: hi", s, record_id="r", purpose="p")
    assert text.messages == ({"role": "user", "content": "##Query: hi"},)  # what the length guard measures
    assert request_key("m", chat, 1) != request_key("m", text, 1)
    assert request_key("m", text, 1) == request_key("m", completion_request("##Query: hi", s, "r", "p"), 1)


@pytest.mark.parametrize("judge, judge_model, run_backend, mode", [
    ("auto", "hkust-nlp/deita-quality-scorer", "llamacpp", "deita"),
    ("auto", "/models/Deita-Quality-Scorer", None, "deita"),
    ("auto", "Qwen/Qwen2.5-72B-Instruct", "llamacpp", "rubric"),
    ("auto", None, "openai", "rubric"),
    ("auto", None, "vllm", "rubric"),
    ("auto", None, "llamacpp", "heuristic"),
    ("auto", None, None, "heuristic"),
    ("rubric", None, "llamacpp", "rubric"),
    ("teacher", None, "llamacpp", "rubric"),      # the older names
    ("none", None, "openai", "heuristic"),
    ("heuristic", "hkust-nlp/deita-quality-scorer", "openai", "heuristic"),
])
def test_judge_mode(judge, judge_model, run_backend, mode):
    jt = TeacherSection(backend="openai", base_url="http://h/v1", model=judge_model) if judge_model else None
    over = {"complexity": {"model": judge_model.replace("uality", "omplexity")}} if judge_model else {}
    assert judge_mode(ScoreConfig(judge=judge, judge_teacher=jt, judge_overrides=over), run_backend) == mode


@pytest.mark.parametrize("kw, message", [
    ({"judge": "deita", "judges": ["accuracy", "complexity"], "combine": "accuracy*complexity"},
     "has scorers for ['quality', 'complexity'] only"),
    ({"judge_overrides": {"complexity": {"model": "x"}}}, "add that section first"),
    ({"judge_teacher": {"backend": "openai", "base_url": "http://h/v1", "model": "hkust-nlp/deita-quality-scorer"}},
     "complexity would be scored by hkust-nlp/deita-quality-scorer"),
    ({"judge_teacher": {"backend": "openai", "model": "m"}, "judge_overrides": {"quality": {"colour": "red"}}},
     "colour"),
])
def test_judge_config_errors_name_the_fix(kw, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ScoreConfig(**kw)


def test_deita_with_the_embedded_backend_is_a_config_error_before_any_work():
    cfg = Config(score={"judge": "deita"})  # the run teacher: the embedded llamacpp (no logprobs)
    with pytest.raises(ConfigError, match="logprobs"):
        score_cli.check(cfg, ScoreConfig(judge="deita"), None)


@pytest.mark.teacher
def test_text_completions_with_logprobs_against_llamacpp(tmp_path, teacher_server):
    """The whole path for real: llama.cpp's /v1/completions answers Deita's prompt with one token and
    top-20 logprobs; the score is the expected value over the digits among them, or unscored with a reason."""
    jt = TeacherSection(backend="openai", base_url=teacher_server, model="smollm2-135m-instruct", timeout_s=120,
                        ping_timeout_s=120)  # the one server may still be busy with an earlier test
    cfg = ScoreConfig(judge="deita", gates=["empty"], judge_teacher=jt)
    factory = TeacherFactory(jt, tmp_path, 0)
    teacher = factory.build()
    try:
        [c] = teacher.chat([completion_request(DEITA_COMPLEXITY.format(instruction="Name a colour."),
                                               Sampling(temperature=0.0, max_tokens=1, logprobs=20))])
    finally:
        teacher.close()
    assert c.ok and c.usage.completion_tokens <= 1 and len(c.logprobs) == 1
    assert len(c.logprobs[0]["top_logprobs"]) >= 20
    m = run_score(scored_dataset(tmp_path / "in"), tmp_path / "out", cfg, deita_ctx(tmp_path))
    assert m["score_source"] == "deita"
    for r in Dataset(tmp_path / "out").read().to_pylist():
        for name in ("quality", "complexity"):
            j = get_meta(r, "score")["judgments"][name]
            assert (j["method"] == "deita" and 1 <= r[name] <= 6) or (
                j["method"] == "unparseable" and r[name] is None and "score tokens" in j["reason"])
