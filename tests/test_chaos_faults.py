"""A teacher that fails from the start (401) or turns to a black hole mid-run: exit 4, no drops, the rerun finishes.

The runs are scripts/chaos_faults.py's (the closing note runs all its faults):
`distill orca` as a subprocess against a loopback OpenAI-compatible server
(faultserver.py), then the same command into the same --out once the server
answers again. No row may land in rejected/ as teacher_error, the faulty run
may write no manifest, and after the rerun every input row is kept or
rejected (none unanswered).
"""

from __future__ import annotations

import pytest
from proc_support import load_script

chaos_faults = load_script("chaos_faults")


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    return chaos_faults.Faults(tmp_path_factory.mktemp("faults"), rows=20)


@pytest.mark.parametrize("key", ["401", "mid-blackhole"])
def test_a_failing_teacher_is_exit_4_without_drops_and_the_rerun_answers_every_row(faults, key):
    r = faults.run(chaos_faults.BY_KEY[key])
    assert r.rc == 4, r.line()
    assert r.first_line.startswith("error: ") and "teacher" in r.first_line, r.line()
    assert r.teacher_error == 0 and not r.manifest, r.line()
    assert r.rerun_rc == 0 and r.teacher_error_total == 0, r.line()
    assert r.unanswered == 0 and r.rows_out + r.rejected == faults.rows == 20, r.line()
    if key == "mid-blackhole":
        assert r.requests > chaos_faults.TURN_AFTER, r.line()  # it did turn part way through the run
