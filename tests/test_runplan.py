"""`distill run`'s chaining: resume skips finished steps, and a step whose input was rebuilt is redone."""

import time

from pipeline.config import load_config
from pipeline.context import RunPaths
from pipeline.runner import run_shards
from pipeline.stage import StageSpec
from pipeline.store import Dataset
from tests.test_runner import LengthFilter, _input


class Counted:
    def __init__(self):
        self.calls = {"filter": 0, "again": 0}

    def plan(self, first_input):
        def filter_step(input, out, cfg, ctx):
            self.calls["filter"] += 1
            return run_shards(LengthFilter(), Dataset(input or first_input, require_complete=True), out, ctx, shard_rows=7)

        def again_step(input, out, cfg, ctx):
            self.calls["again"] += 1
            return run_shards(LengthFilter(), Dataset(input, require_complete=True), out, ctx, shard_rows=7)

        return [StageSpec("filter", None, filter_step, str, "keep even rows", needs_input=False),
                StageSpec("again", None, again_step, str, "keep even rows again")]


def test_resume_skips_finished_steps_and_redoes_steps_whose_input_was_rebuilt(tmp_path):
    _input(tmp_path)
    cfg = load_config(None)
    paths = RunPaths(tmp_path / "work", "r1")
    c = Counted()
    lines = []
    run = lambda: run_plan(cfg, paths, plan=c.plan(tmp_path / "in"), echo=lines.append, progress=False)  # noqa: E731

    from pipeline.runplan import run_plan
    run()
    assert c.calls == {"filter": 1, "again": 1}
    run()  # everything finished: nothing is redone
    assert c.calls == {"filter": 1, "again": 1}

    # the first step is rebuilt (its folder removed by hand, then rerun): the second must not keep stale rows
    import shutil
    shutil.rmtree(paths.stage_dir("filter"))
    time.sleep(0.01)
    lines.clear()
    run()
    assert c.calls == {"filter": 2, "again": 2}
    assert any("[again] its input filter was rebuilt after it" in s for s in lines), lines
    stale = list((paths.run_dir / ".stale").iterdir())
    assert len(stale) == 1 and stale[0].name.startswith("again-") and (stale[0] / "_manifest.json").exists()
    assert Dataset(paths.stage_dir("again"), require_complete=True).num_rows() == 13
