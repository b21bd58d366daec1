"""The API key is sent to the server and appears nowhere else: logs, errors, repr, stats, files."""

from __future__ import annotations

import logging

from faultserver import FaultServer

from pipeline import records
from pipeline.config import TeacherSection
from pipeline.context import RunContext
from pipeline.runner import ShardResult, run_shards
from pipeline.store import Dataset, DatasetWriter
from pipeline.teacher import TeacherFactory
from pipeline.teacher.base import ChatRequest

KEY = "sk-distill-test-7Q2ZK9XW4MBLJ3PVRT8N"


class AskStage:
    name = "secret_check"

    def settings(self):
        return {}

    def process(self, rows, ctx):
        reqs = [ChatRequest(messages=[{"role": "user", "content": r["instruction"]}], record_id=r["id"], purpose="a")
                for r in rows]
        kept, rejected = [], []
        for row, c in zip(rows, ctx.teacher.chat(reqs)):
            if c.ok:
                kept.append(dict(row, output=c.text))
            else:
                rejected.append(records.rejected_row(row, self.name, c.error.kind, c.error.message))
        return ShardResult(kept=kept, rejected=rejected)


def test_api_key_never_leaks(tmp_path, monkeypatch, caplog, capfd):
    monkeypatch.setenv("DISTILL_SECRET_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    src = tmp_path / "in"
    w = DatasetWriter(src, "seed")
    w.write_shard(0, [records.new_row(t, origin="seed") for t in ("ok one", "careless", "ok two")])
    w.write_manifest()
    plan = lambda content, attempt: "401echo" if content == "careless" else "ok"  # noqa: E731
    with FaultServer(plan) as srv:
        sec = TeacherSection(backend="openai", base_url=srv.base_url, api_key_env="DISTILL_SECRET_KEY",
                             max_retries=1, cache_path=str(tmp_path / "cache.sqlite"))
        ctx = RunContext(run_id="r", seed=1, workdir=tmp_path, progress=False,
                           teacher_factory=lambda: TeacherFactory(sec, tmp_path, 1).build())
        manifest = run_shards(AskStage(), Dataset(src), tmp_path / "out", ctx)
        teacher = ctx.teacher
        produced = [repr(teacher), repr(teacher.inner), str(teacher.stats.to_dict()), str(manifest),
                    str(vars(teacher.inner))]
        ctx.close()
    assert srv.auth == {f"Bearer {KEY}"}             # the key was really used
    out = Dataset(tmp_path / "out")
    rej = out.rejected().read().to_pylist()
    assert [r["drop_reason"] for r in rej] == ["auth"] and "***" in rej[0]["drop_detail"]
    assert out.num_rows() == 2
    captured = capfd.readouterr()
    produced += [caplog.text, captured.out, captured.err]
    for text in produced:
        assert KEY not in text
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert KEY.encode() not in f.read_bytes(), f
