"""The `[refresh]` config section: where releases are published, how many are kept, the nightly budget.

The budget caps one night's generation; it does not size it. The size of a
night is set by the generation stages' own settings ([self_instruct]
num_instructions, [evol_instruct] rounds ...). A budget that runs out part
way publishes what was made within it (exit 0, `budget.exhausted` in the
summary); one that runs out before any new row survives exits 7. With
`[run] executor = "ray"` the budget is one ledger shared by the driver and
every Ray worker (teacher/budget.py), so the token and time checks bound the
workers' requests too.
"""

from __future__ import annotations

from pydantic import Field

from ..config import Section


class RefreshConfig(Section):
    publish_dir: str | None = Field(
        None, description="release folder: versions/<version>/ and the `latest` symlink; default <workdir>/release")
    keep_versions: int = Field(3, ge=1, description="published versions kept; older ones are removed after each publish")
    max_rows: int | None = Field(
        None, gt=0, description="budget: at most this many generated rows per night (every stage reads at most "
                                "this many input rows; the self-instruct target is capped to it)")
    max_tokens: int | None = Field(
        None, gt=0, description="budget: teacher tokens (prompt + completion) sent per night; cache hits are free; "
                                "checked every teacher.concurrency requests, so one wave may overshoot")
    max_seconds: float | None = Field(
        None, gt=0, description="budget: no teacher request is sent after this many seconds of the night "
                                "(counted from the teacher ping); requests in flight finish")
    max_cost: float | None = Field(
        None, ge=0, description="budget: spend per night in the [teacher] prices' currency, counted from actual usage "
                                "(needs [teacher] price_prompt_per_mtok and price_completion_per_mtok); checked "
                                "like max_tokens, every teacher.concurrency requests")
    ping_max_tokens: int = Field(8, gt=0, description="answer length of the teacher ping sent before any work")
    prompt_cost_per_million: float = Field(
        0.0, ge=0, description="cost estimate: currency units per million prompt tokens (0: the embedded teacher is free)")
    completion_cost_per_million: float = Field(
        0.0, ge=0, description="cost estimate: currency units per million completion tokens")
