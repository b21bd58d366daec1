"""The bad-input corpus (tests/bad_input_corpus.py) through the real CLI: each case's exit code and first line,
never a traceback; some cases also check what was (not) written."""

from __future__ import annotations

import pytest
from bad_input_corpus import CASES, run_case, verify


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, tmp_path):
    reason = case.needs() if case.needs else None
    if reason:
        pytest.skip(reason)
    res = run_case(case, tmp_path)
    problems = verify(case, tmp_path, res)
    assert not problems, "\n".join(problems)
