"""Every deeper capture of a generation stage is the same through the local and the Ray executor: the
`reasoning` column and the top-k logprobs in `meta` of Orca and Evol-Instruct answers, then the release
`distill export --with-logprobs` writes from them (shards and side files, byte for byte) and the soft
targets `pipeline.kd.load_soft_targets` reads back.

The teacher is tests/reasoning_server.py over loopback, in both of its shapes: the trace in
`message.reasoning_content` (vLLM with a reasoning parser) and `<think>...</think>` in the text (an R1-style
model), with `logprobs.content` as the OpenAI API documents it. Its answers are a pure function of the
request, so both executors see the same replies. Self-Instruct is not here: it keeps no logprobs or
reasoning, and runs in the driver under `--executor ray` by design (its filter is sequential).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray_support
from evol_support import GIVEN, make_input
from reasoning_server import ReasoningServer, solve
from typer.testing import CliRunner

from pipeline import logprobs as L
from pipeline.cli import app
from pipeline.config import TeacherSection
from pipeline.context import RunContext
from pipeline.kd import load_soft_targets, teacher_vocab
from pipeline.records import get_meta
from pipeline.stages.evol_instruct import EvolConfig, run_evol_instruct
from pipeline.stages.orca import OrcaConfig, run_orca
from pipeline.store import Dataset

K = 5
SUMS = [(2, 3), (40, 2), (7, 8), (11, 31), (5, 5), (9, 1)]


@pytest.fixture
def ray_(ray_cluster):
    ray_support.register(ray_cluster)
    return ray_cluster


def evol_reply(content: str) -> tuple[str, str]:
    """The evolving, judging and answering calls of Evol-Instruct, told apart by their prompts."""
    given = GIVEN.search(content)
    if given:
        return "The prompt needs one more step.", f"#Rewritten Prompt#: {given.group(1)} Explain each step in turn."
    if "Second prompt:\n" in content:
        return "They ask different things.", "Not Equal"
    return solve(content)


def ctx_for(srv: ReasoningServer, tmp_path, executor: str, cache: bool = False) -> RunContext:
    from pipeline.teacher import TeacherFactory
    sec = TeacherSection(backend="openai", base_url=srv.base_url, concurrency=2, max_retries=0, cache=cache,
                         cache_path=str(tmp_path / "cache.sqlite"))
    return RunContext(run_id="cap", seed=7, workdir=tmp_path, teacher_factory=TeacherFactory(sec, tmp_path, 7),
                      progress=False, executor=executor)


def table(folder):
    return Dataset(folder, require_complete=True).read().drop_columns(["created_at"])


def release(folder, out, *args) -> dict:
    r = CliRunner().invoke(app, ["export", str(folder), "--out", str(out), "--with-logprobs", "--heldout", "0",
                                 "--no-progress", *args])
    assert r.exit_code == 0, r.output
    return json.loads((out / "manifest.json").read_text())


def card(release) -> list[str]:
    """The release card without the lines that say when it was made and from which folder."""
    text = (release / "README.md").read_text()
    return [line for line in text.splitlines() if str(release.parent) not in line and "created" not in line.lower()]


def assert_same_release(a, b) -> list:
    """Two releases of the same rows: the same files, byte for byte, and the same soft targets."""
    ma, mb = (json.loads((p / "manifest.json").read_text()) for p in (a, b))
    skip = ("created_at", "input", "source", "seconds")  # when and from which folder
    assert {k: v for k, v in ma.items() if k not in skip} == {k: v for k, v in mb.items() if k not in skip}
    names = sorted(p.name for p in a.glob("*.parquet"))
    assert names == sorted(p.name for p in b.glob("*.parquet")) and any(n.startswith(L.SIDE_PREFIX) for n in names)
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes(), n
    assert card(a) == card(b)  # the card's lineage names the teacher either way
    vocab = teacher_vocab(a)
    assert vocab == teacher_vocab(b)
    ta, tb = load_soft_targets(a, vocab), load_soft_targets(b, vocab)
    assert ta and [t.id for t in ta] == [t.id for t in tb]
    for x, y in zip(ta, tb):
        assert np.array_equal(x.ids, y.ids) and np.array_equal(x.top_ids, y.top_ids)
        assert np.array_equal(x.top_logprobs, y.top_logprobs)
    return ta


def check_capture(rows, stage: str, mode: str) -> None:
    """The captures are there (so an equality of two empty columns cannot pass): the trace out of the answer,
    k alternatives per answer token, token bytes kept where they are not the text's UTF-8."""
    assert rows
    for r in rows:
        trace, answer = solve(r["instruction"])
        assert (r["output"], r["reasoning"]) == (answer, trace)
        lp = get_meta(r, stage)["logprobs"]
        words = len((f"<think>\n{trace}\n</think>\n\n{answer}" if mode == "think" else answer).split())
        assert len(lp) == words and all(len(p[2]) == K for p in lp)
        assert all([0xE2, 0x80] in [a[0] for a in p[2]] for p in lp)


@pytest.mark.parametrize("mode", ["field", "think"])
def test_orca_reasoning_and_logprobs_are_the_same_on_ray_and_locally(tmp_path, ray_, mode):
    src = make_input(tmp_path / "in", [f"What is {a} + {b}?" for a, b in SUMS])
    cfg = OrcaConfig(max_tokens=64, logprobs=K)
    srv = ReasoningServer(mode)
    try:
        m = {}
        # the Ray workers also fill the response cache, which a third, local run then answers from
        for ex, cache in (("local", False), ("ray", True), ("cached", True)):
            ctx = ctx_for(srv, tmp_path, "ray" if ex == "ray" else "local", cache)
            try:
                m[ex] = run_orca(src, tmp_path / ex, ctx, cfg, shard_rows=2)
            finally:
                ctx.close()
        assert srv.received == 2 * len(SUMS)  # the cached run asked the server nothing
    finally:
        srv.close()
    assert m["ray"]["executor"] == "ray" and m["ray"]["ray_workers"] == 2 and "ray_workers" not in m["local"]
    assert m["ray"]["totals"]["reasoning_rows"] == m["local"]["totals"]["reasoning_rows"] == len(SUMS)
    assert m["cached"]["totals"]["teacher_cache_hits"] == len(SUMS)
    a, b, c = table(tmp_path / "local"), table(tmp_path / "ray"), table(tmp_path / "cached")
    assert a.num_rows == len(SUMS) and a.equals(b)
    assert a.drop_columns(["meta"]).equals(c.drop_columns(["meta"]))
    for x, y in zip(a.column("meta").to_pylist(), c.column("meta").to_pylist()):
        x, y = json.loads(x), json.loads(y)
        assert (x["orca"].pop("cached"), y["orca"].pop("cached")) == (False, True) and x == y
    check_capture(Dataset(tmp_path / "ray").read().to_pylist(), "orca", mode)

    for fmt in ("field", "think_tags"):
        ra, rb = tmp_path / f"rel-local-{fmt}", tmp_path / f"rel-ray-{fmt}"
        mf = release(tmp_path / "local", ra, "--reasoning", fmt)
        release(tmp_path / "ray", rb, "--reasoning", fmt)
        targets = assert_same_release(ra, rb)
        assert len(targets) == len(SUMS) and mf["logprobs"]["tokens"] == sum(len(t.ids) for t in targets)
        assert mf["reasoning"]["rows_with_reasoning"] == len(SUMS)
        side = pq.read_table(ra / L.side_file(mf["files"][0]["path"]))
        assert side.column("id").to_pylist() == pq.read_table(ra / mf["files"][0]["path"]).column("id").to_pylist()


@pytest.mark.parametrize("mode", ["field", "think"])
def test_evol_answers_keep_reasoning_and_logprobs_the_same_on_ray_and_locally(tmp_path, ray_, mode):
    src = make_input(tmp_path / "in", [f"What is {a} + {b}?" for a, b in SUMS])
    cfg = EvolConfig(rounds=1, logprobs=K, evolve_max_tokens=64, answer_max_tokens=64, include_inputs=False)
    srv = ReasoningServer(mode, reply=evol_reply)
    try:
        for ex in ("local", "ray"):
            ctx = ctx_for(srv, tmp_path, ex)
            try:
                run_evol_instruct(src, tmp_path / ex, ctx, cfg, shard_rows=2)
            finally:
                ctx.close()
    finally:
        srv.close()
    from pipeline.stages.evol_instruct.stage import round_dir
    rm = json.loads((round_dir(tmp_path / "ray", 1) / "_manifest.json").read_text())
    assert rm["executor"] == "ray" and rm["ray_workers"] == 2
    a, b = table(tmp_path / "local"), table(tmp_path / "ray")
    assert a.num_rows == len(SUMS) and a.equals(b)
    check_capture(Dataset(tmp_path / "ray").read().to_pylist(), "evol_instruct", mode)
    release(tmp_path / "local", tmp_path / "rel-local")
    release(tmp_path / "ray", tmp_path / "rel-ray")
    assert len(assert_same_release(tmp_path / "rel-local", tmp_path / "rel-ray")) == len(SUMS)
