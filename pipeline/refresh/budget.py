"""The nightly budget: rows, teacher tokens, wall-clock seconds, and the teacher wrapper that enforces two of them.

`BudgetedTeacher` sits between the response cache and the backend, so cache
hits cost nothing and are always served. It sends requests in waves of
`wave` (the teacher's concurrency) and, before each wave, checks the token
and time limits; once one is reached every further request comes back as a
`budget_exhausted` error without being sent. Stages already treat a failed
completion as a dropped row with its reason, so a budget that runs out
mid-stage leaves every unanswered row accounted for.

The row limit is not enforced here: it caps how many input rows each stage
reads (see refresh/run.py).

With the Ray executor the workers build their own teachers, so the night's
one budget is a `SharedBudget`: its counters live in a small Ray actor, and
every worker's teacher factory wraps its backend in a `BudgetedTeacher` on
that same budget (`BudgetWrap`), inside the response cache as in the driver.
It also counts the tokens every worker sent, for the night's summary.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from ..teacher.base import ChatRequest, Completion, TeacherError


class Budget:
    def __init__(self, max_rows: int | None = None, max_tokens: int | None = None,
                 max_seconds: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.max_rows, self.max_tokens, self.max_seconds = max_rows, max_tokens, max_seconds
        self.clock = clock
        self.start = clock()
        self._ledger = BudgetLedger()  # counted here; a SharedBudget keeps its ledger in a Ray actor

    def counters(self) -> tuple[int, int, int, list[str]]:
        """(prompt, completion) tokens of requests actually sent, requests refused, limits hit in order."""
        return self._ledger.state()

    @property
    def tokens(self) -> int:
        return sum(self.counters()[:2])

    @property
    def split(self) -> list[int]:
        return list(self.counters()[:2])

    @property
    def refused(self) -> int:
        return self.counters()[2]

    @property
    def hit(self) -> list[str]:
        return self.counters()[3]

    @property
    def enforced(self) -> bool:
        return self.max_tokens is not None or self.max_seconds is not None

    def elapsed(self) -> float:
        return self.clock() - self.start

    def tokens_left(self) -> int | None:
        return None if self.max_tokens is None else max(self.max_tokens - self.tokens, 0)

    def out_of(self) -> str | None:
        """The limit that is used up now ('tokens' or 'seconds'), if any."""
        if self.max_tokens is not None and self.tokens >= self.max_tokens:
            return "tokens"
        if self.max_seconds is not None and self.elapsed() >= self.max_seconds:
            return "seconds"
        return None

    def note(self, limit: str) -> None:
        self._ledger.note(limit)

    def spend(self, prompt: int, completion: int) -> None:
        self._ledger.spend(prompt, completion)

    def refuse(self, requests: int) -> None:
        self._ledger.refuse(requests)

    def close(self) -> None:
        """Nothing to free in process (a SharedBudget frees its actor)."""

    @property
    def exhausted(self) -> bool:
        return bool(self.hit)

    def to_dict(self) -> dict[str, Any]:
        prompt, completion, refused, hit = self.counters()  # one snapshot (one call for a SharedBudget)
        return {"max_rows": self.max_rows, "max_tokens": self.max_tokens, "max_seconds": self.max_seconds,
                "tokens_sent": prompt + completion, "seconds": round(self.elapsed(), 3),
                "requests_refused": refused, "exhausted": bool(hit), "exhausted_by": list(hit)}


class BudgetedTeacher:
    """A Teacher that stops sending once the budget's token or time limit is reached."""

    def __init__(self, inner: Any, budget: Budget, wave: int = 64):
        self.inner = inner
        self.budget = budget
        self.wave = max(int(wave), 1)
        self.backend = inner.backend
        self.model = inner.model
        self.stats = inner.stats
        # The cache hands its on_done through when the backend streams answers.
        self.streams_completions = getattr(inner, "streams_completions", False)

    def _refusal(self, limit: str) -> Completion:
        b = self.budget
        detail = (f"{b.tokens} of {b.max_tokens} tokens spent" if limit == "tokens"
                  else f"{b.elapsed():.0f} of {b.max_seconds:g} seconds used")
        return Completion(text=None, model=self.model, error=TeacherError(
            kind="budget_exhausted", message=f"refresh budget exhausted ({detail}); not sent",
            attempts=0, retryable=False))

    def chat(self, requests: list[ChatRequest], on_done=None) -> list[Completion]:
        b = self.budget
        step = self.wave if b.enforced else max(len(requests), 1)
        out: list[Completion] = []
        for start in range(0, len(requests), step):
            chunk = requests[start:start + step]
            limit = b.out_of()
            if limit is not None:
                b.note(limit)
                for i in range(start, len(requests)):
                    c = self._refusal(limit)
                    out.append(c)
                    if on_done is not None:
                        on_done(i, c)
                b.refuse(len(requests) - start)
                break
            if self.streams_completions and on_done is not None:
                got = self.inner.chat(chunk, on_done=lambda j, c, s=start: on_done(s + j, c))
            else:
                got = self.inner.chat(chunk)
                if on_done is not None:
                    for j, c in enumerate(got):
                        on_done(start + j, c)
            sent = [c for c in got if not c.cached]
            if sent:
                b.spend(sum(c.usage.prompt_tokens for c in sent), sum(c.usage.completion_tokens for c in sent))
            out.extend(got)
        return out

    def close(self) -> None:
        self.inner.close()


class BudgetLedger:
    """A budget's counters: held by a `Budget`, or by a Ray actor behind a `SharedBudget`."""

    def __init__(self) -> None:
        self.prompt = self.completion = 0
        self.refused = 0
        self.hit: list[str] = []

    def spend(self, prompt: int, completion: int) -> None:
        self.prompt += prompt
        self.completion += completion

    def refuse(self, requests: int) -> None:
        self.refused += requests

    def note(self, limit: str) -> None:
        if limit not in self.hit:
            self.hit.append(limit)

    def state(self) -> tuple[int, int, int, list[str]]:
        return self.prompt, self.completion, self.refused, list(self.hit)


class SharedBudget(Budget):
    """`Budget` whose counters live in a `BudgetLedger` actor, so the driver and every Ray worker draw
    on one budget. Picklable; time is wall-clock from the driver's start (monotonic clocks are per process)."""

    def __init__(self, ledger: Any, max_rows: int | None, max_tokens: int | None, max_seconds: float | None,
                 start: float):
        self.ledger = ledger
        self.max_rows, self.max_tokens, self.max_seconds = max_rows, max_tokens, max_seconds
        self.clock = time.time
        self.start = start

    @classmethod
    def start_on(cls, ray: Any, max_rows: int | None = None, max_tokens: int | None = None,
                 max_seconds: float | None = None) -> "SharedBudget":
        ledger = ray.remote(num_cpus=0)(BudgetLedger).remote()
        return cls(ledger, max_rows, max_tokens, max_seconds, time.time())

    def counters(self) -> tuple[int, int, int, list[str]]:
        import ray
        return tuple(ray.get(self.ledger.state.remote()))  # type: ignore[return-value]

    def spend(self, prompt: int, completion: int) -> None:
        import ray
        ray.get(self.ledger.spend.remote(prompt, completion))  # counted before this worker's next check

    def refuse(self, requests: int) -> None:
        import ray
        ray.get(self.ledger.refuse.remote(requests))

    def note(self, limit: str) -> None:
        import ray
        ray.get(self.ledger.note.remote(limit))

    def close(self) -> None:
        import ray
        ray.kill(self.ledger)


@dataclass(frozen=True)
class BudgetWrap:
    """A teacher factory's `wrap`: the worker's backend under the shared budget, in waves of `wave`."""

    budget: Budget
    wave: int = 64

    def __call__(self, backend: Any) -> BudgetedTeacher:
        return BudgetedTeacher(backend, self.budget, self.wave)


def night_budget(rcfg: Any, executor: str, ray_address: str | None) -> Budget:
    """The night's budget: in this process, or with `ray` a SharedBudget, since Ray workers build
    their own teachers and must draw on (and count into) the same one."""
    if executor == "ray":
        from ..executors.ray_runtime import connect
        return SharedBudget.start_on(connect(ray_address), rcfg.max_rows, rcfg.max_tokens, rcfg.max_seconds)
    return Budget(rcfg.max_rows, rcfg.max_tokens, rcfg.max_seconds)
