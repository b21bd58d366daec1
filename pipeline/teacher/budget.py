"""Budgets: the tokens, requests, rows and seconds a run, or one stage of it, may spend.

A `Budget` is limits plus a ledger of what was spent: a `Ledger` here, or
(`Budget.on_ray`) a `Ledger` actor shared by the driver's and every Ray
worker's copy. Time counts from its start, wall-clock on Ray (monotonic
clocks are per process). Two things spend it:

- `BudgetedTeacher`, the teacher layer between the response cache and the
  backend, so cache hits cost nothing and are always served. While a limit
  is enforced it keeps `wave` (the teacher's concurrency) requests in flight
  and checks the token and time limits before each one is sent, so a slow
  answer never idles the window and the budget is overshot by at most what
  is in flight (a backend that cannot take concurrent calls, `concurrent_calls`
  false, gets waves of `wave` with the check before each); once one is
  reached every further request comes back as a `budget_exhausted` error
  without being sent.
  Stages treat a failed completion as a dropped row with its reason, so a
  budget that runs out mid-stage leaves every unanswered row accounted for.
- a stage's own caps (max_tokens_total, max_requests, max_rows): a `child`
  of the run's budget that the stage spends from its completions (cache
  hits too, so the caps hold across a resume) and checks between batches,
  stopping with its own stop reason rather than have requests refused.

`exhausted_by` is the limit used up now; `hit` the limits that stopped or
refused something (`note`), in order.

Money (`cap_cost`, `distill run/refresh --max-cost`): with the teacher's
prices (teacher/pricing.py) every `spend` is also counted in currency, and
`cost` is one more limit, checked like tokens (before each wave, so one wave
may overshoot). A batch, paid after it is submitted, reserves its worst
case first so it cannot overshoot:

    usd = budget.worst_case_cost(requests)   # estimated prompt + max_tokens per request, batch price
    budget.reserve_cost(usd)                 # BudgetExhausted (exit 7) when spent + reserved + usd > cap
    ...                                      # submit; when its results are in:
    budget.settle_cost(usd, prompt, completion, requests=n)  # release it, spend the actual at the batch price
    budget.release_cost(usd)                 # or, for a batch cancelled or never submitted: release only

`settle_cost` is for a batch path that the `BudgetedTeacher` does not see.
A batch backend *under* the `BudgetedTeacher` is already counted by it when
its completions come back: give `cap_cost(..., batch=True)` so that counting
is at the batch price, and only `release_cost` the reservation afterwards.

A budget with `resumable` set (`distill run`'s) refuses with the kind
`budget_paused`, an outside failure: the refused rows are unanswered, not
dropped, their shards are not marked done and a rerun with more room asks
again. A refresh night's refusals stay `budget_exhausted` drops.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from ..errors import BudgetExhausted
from .base import ChatRequest, Completion, OnDone, TeacherError, TeacherLayer
from .limits import estimate_tokens
from .pricing import Prices
from .slots import caller_rank, first_by


class Ledger:
    """A budget's counters; run as a Ray actor for a budget shared by the workers."""

    def __init__(self) -> None:
        self.prompt = self.completion = self.requests = self.rows = self.refused = 0
        self.usd = self.reserved = 0.0
        self.hit: list[str] = []

    def spend(self, prompt: int = 0, completion: int = 0, requests: int = 0, rows: int = 0,
              usd: float = 0.0) -> None:
        self.prompt += prompt
        self.completion += completion
        self.requests += requests
        self.rows += rows
        self.usd += usd

    def reserve(self, usd: float, cap: float | None) -> bool:
        """Hold `usd` unless spent + reserved + usd would pass `cap`; one step, so two workers cannot both pass."""
        if cap is not None and self.usd + self.reserved + usd > cap + 1e-12:
            return False
        self.reserved += usd
        return True

    def release(self, usd: float) -> None:
        self.reserved = max(self.reserved - usd, 0.0)

    def money(self) -> tuple[float, float]:
        """(spent, reserved), in the prices' currency."""
        return self.usd, self.reserved

    def refuse(self, requests: int) -> None:
        self.refused += requests

    def note(self, limit: str) -> None:
        if limit not in self.hit:
            self.hit.append(limit)

    def state(self) -> tuple[int, int, int, int, int, list[str]]:
        return self.prompt, self.completion, self.requests, self.rows, self.refused, list(self.hit)

    def close(self) -> None:
        """Nothing to free in process."""


class RayLedger:
    """A `Ledger` actor behind the same methods; each call waits for the actor, so the next check sees it."""

    def __init__(self, actor: Any):
        self.actor = actor

    def __getattr__(self, name: str) -> Callable[..., Any]:  # spend, refuse, note, state, reserve, release, money
        if name.startswith("_") or "actor" not in self.__dict__:  # unpickling looks before state is set
            raise AttributeError(name)
        import ray
        method = getattr(self.actor, name)
        return lambda *args: ray.get(method.remote(*args))

    def close(self) -> None:
        import ray
        ray.kill(self.actor)


class Budget:
    def __init__(self, max_tokens: int | None = None, max_requests: int | None = None,
                 max_seconds: float | None = None, ledger: Ledger | RayLedger | None = None, *,
                 max_rows: int | None = None, clock: Callable[[], float] = time.monotonic,
                 parent: "Budget | None" = None):
        self.max_tokens, self.max_requests, self.max_seconds, self.max_rows = \
            max_tokens, max_requests, max_seconds, max_rows
        self.ledger = ledger if ledger is not None else Ledger()
        self.clock = clock
        self.start = clock()
        self.parent = parent
        # the caps this budget was given itself, before a parent's room narrowed them (see `child`)
        self.own_caps = {"max_rows": max_rows, "max_requests": max_requests, "max_tokens": max_tokens}
        self.max_cost: float | None = None
        self.prices: Prices | None = None
        self.resumable = self.batch_priced = False

    def cap_cost(self, max_cost: float | None, prices: Prices | None, *, resumable: bool = False,
                 batch: bool = False) -> "Budget":
        """Count spend in money at `prices` and stop at `max_cost` (None: count only). `resumable`: a run
        that a rerun continues (see the module docstring); `batch`: the teacher is a batch backend, so
        `spend` counts at the batch price unless told otherwise. Returns self."""
        if max_cost is not None and prices is None:
            raise ValueError("a cost cap needs prices")
        self.max_cost, self.prices, self.resumable, self.batch_priced = max_cost, prices, resumable, batch
        return self

    @classmethod
    def on_ray(cls, ray: Any, max_tokens: int | None = None, max_seconds: float | None = None, *,
               max_rows: int | None = None) -> "Budget":
        """A budget whose ledger is a Ray actor: picklable, and every copy draws on the same counts."""
        ledger = RayLedger(ray.remote(num_cpus=0)(Ledger).remote())
        return cls(max_tokens, None, max_seconds, ledger, max_rows=max_rows, clock=time.time)

    def child(self, max_tokens: int | None = None, max_requests: int | None = None,
              max_rows: int | None = None) -> "Budget":
        """A stage's own caps inside this budget, counted from zero. Its token cap is at most what
        is left of this budget's now (at least 1, as a stage's max_tokens_total), so the stage stops
        between batches before its requests are refused."""
        own = {"max_rows": max_rows, "max_requests": max_requests, "max_tokens": max_tokens}
        left = self.tokens_left()
        if left is not None:
            max_tokens = max(1, min(left, max_tokens) if max_tokens is not None else left)
        child = Budget(max_tokens, max_requests, max_rows=max_rows, parent=self)
        child.own_caps = own
        return child

    def counters(self) -> tuple[int, int, int, int, int, list[str]]:
        """(prompt tokens, completion tokens, requests, rows, requests refused, limits hit): one snapshot."""
        return self.ledger.state()

    @property
    def tokens(self) -> int:
        return sum(self.counters()[:2])

    @property
    def split(self) -> list[int]:
        return list(self.counters()[:2])

    @property
    def requests(self) -> int:
        return self.counters()[2]

    @property
    def rows(self) -> int:
        return self.counters()[3]

    @property
    def refused(self) -> int:
        return self.counters()[4]

    @property
    def hit(self) -> list[str]:
        return self.counters()[5]

    @property
    def exhausted(self) -> bool:
        return bool(self.hit)

    @property
    def shared(self) -> bool:
        """The counts are the Ray cluster's, every worker's included."""
        return isinstance(self.ledger, RayLedger)

    @property
    def enforced(self) -> bool:
        return self.max_tokens is not None or self.max_seconds is not None or self.max_cost is not None

    @property
    def cost(self) -> float:
        """Spent so far in the prices' currency (0 without prices)."""
        return self.ledger.money()[0]

    @property
    def reserved_cost(self) -> float:
        return self.ledger.money()[1]

    def cost_left(self) -> float | None:
        if self.max_cost is None:
            return None
        spent, reserved = self.ledger.money()
        return max(self.max_cost - spent - reserved, 0.0)

    def worst_case_cost(self, requests: list[ChatRequest], *, batch: bool = True) -> float:
        """The most `requests` can cost: estimated prompt tokens (about four characters a token) plus
        max_tokens each, at the batch price (`batch`) or the online one; 0 without prices."""
        if self.prices is None:
            return 0.0
        prompt = sum(estimate_tokens(r.messages, 0) for r in requests)
        return self.prices.cost(prompt, sum(r.sampling.max_tokens for r in requests), batch=batch)

    def reserve_cost(self, usd: float) -> None:
        """Hold `usd` of the cost cap for a batch about to be submitted; BudgetExhausted (exit 7, nothing
        held, `cost` noted) when spent + reserved + usd would pass the cap. Without a cap it only counts."""
        if not self.ledger.reserve(float(usd), self.max_cost):
            self.note("cost")
            spent, reserved = self.ledger.money()
            raise BudgetExhausted(f"cost cap {self.max_cost:.4f}: a batch whose worst case is {usd:.4f} does not fit "
                                  f"({spent:.4f} spent, {reserved:.4f} held by batches in flight); nothing was "
                                  "submitted; rerun with a larger --max-cost to continue")

    def release_cost(self, usd: float) -> None:
        """Give back a reservation (a batch cancelled, expired unpaid, or never submitted)."""
        self.ledger.release(float(usd))

    def settle_cost(self, reserved_usd: float, prompt: int, completion: int, requests: int = 0) -> None:
        """A batch's results are in: release its reservation and spend what it used, at the batch price."""
        self.ledger.release(float(reserved_usd))
        self.spend(prompt, completion, requests, batch=True)

    def refusal_detail(self, limit: str) -> str:
        """What ran out, for a refused request's message."""
        if limit == "cost":
            return f"{self.cost:.4f} of {self.max_cost:g} cost spent"
        if limit == "tokens":
            return f"{self.tokens} of {self.max_tokens} tokens spent"
        return f"{self.elapsed():.0f} of {self.max_seconds:g} seconds used"

    @property
    def refusal_kind(self) -> str:
        return "budget_paused" if self.resumable else "budget_exhausted"

    def elapsed(self) -> float:
        return self.clock() - self.start

    def tokens_left(self) -> int | None:
        return None if self.max_tokens is None else max(self.max_tokens - self.tokens, 0)

    def rows_left(self) -> int | None:
        return None if self.max_rows is None else max(self.max_rows - self.rows, 0)

    @property
    def exhausted_by(self) -> str | None:
        """The limit used up now: 'rows', 'requests', 'tokens', 'cost' or 'seconds' (checked in that order).
        Reservations count against the cost cap."""
        prompt, completion, requests, rows, _, _ = self.counters()
        for limit, used, cap in (("rows", rows, self.max_rows), ("requests", requests, self.max_requests),
                                 ("tokens", prompt + completion, self.max_tokens)):
            if cap is not None and used >= cap:
                return limit
        if self.max_cost is not None and sum(self.ledger.money()) >= self.max_cost:
            return "cost"
        if self.max_seconds is not None and self.elapsed() >= self.max_seconds:
            return "seconds"
        return None

    def note(self, limit: str) -> None:
        """`limit` stopped or refused something; a child's token cap is its parent's too."""
        self.ledger.note(limit)
        if limit == "tokens" and self.parent is not None and self.parent.max_tokens is not None:
            self.parent.note(limit)

    def spend(self, prompt: int = 0, completion: int = 0, requests: int = 0, rows: int = 0, *,
              batch: bool | None = None) -> None:
        """Count what was used; with prices, its cost too: online, or at the batch price (`batch`; None: the
        budget's `batch_priced`)."""
        batch = self.batch_priced if batch is None else batch
        usd = self.prices.cost(prompt, completion, batch=batch) if self.prices is not None else 0.0
        self.ledger.spend(prompt, completion, requests, rows, usd)

    def refuse(self, requests: int) -> None:
        self.ledger.refuse(requests)

    def close(self) -> None:
        self.ledger.close()

    def to_dict(self) -> dict[str, Any]:
        prompt, completion, _, _, refused, hit = self.counters()
        out = {"max_rows": self.max_rows, "max_tokens": self.max_tokens, "max_seconds": self.max_seconds,
               "tokens_sent": prompt + completion, "seconds": round(self.elapsed(), 3),
               "requests_refused": refused, "exhausted": bool(hit), "exhausted_by": list(hit)}
        if self.prices is not None:
            out.update(max_cost=self.max_cost, cost=round(self.cost, 6), cost_reserved=round(self.reserved_cost, 6))
        return out


class BatchReservations:
    """A batch backend's `reserve` hook under a cost cap (factory.py wires it): each batch's worst case is
    held before the batch is created (BudgetExhausted, exit 7, when it does not fit), and the holds of one
    chat() call are given back when the call returns, after `BudgetedTeacher` has spent what was used."""

    def __init__(self, budget: Budget):
        self.budget = budget
        self.local = threading.local()  # the holds of the chat() call running in this thread

    def held(self) -> list[float]:
        if not hasattr(self.local, "held"):
            self.local.held = []
        return self.local.held

    def __call__(self, requests: list[ChatRequest]) -> None:
        usd = self.budget.worst_case_cost(requests)
        self.budget.reserve_cost(usd)
        self.held().append(usd)

    def release(self) -> None:
        held = self.held()
        while held:
            self.budget.release_cost(held.pop())


class BudgetedTeacher(TeacherLayer):
    """A Teacher that stops sending once the budget's token or time limit is reached."""

    def __init__(self, inner: Any, budget: Budget, wave: int = 64, reservations: BatchReservations | None = None):
        """`reservations`: the hook of a batch backend below, which holds each batch's worst case itself:
        such a teacher gets each call whole (its batches), not in waves."""
        super().__init__(inner)
        self.budget = budget
        self.reservations = reservations
        self.wave = max(int(wave), 1)
        # `wave` requests past the limit check at a time over every call: overlapping shards (runner.py)
        # each run their own senders, and the overshoot must stay one window, not one per shard
        self.window = threading.BoundedSemaphore(self.wave)

    def _refusal(self, limit: str) -> Completion:
        b = self.budget
        detail = b.refusal_detail(limit)
        return Completion(text=None, model=self.model, error=TeacherError(
            kind=b.refusal_kind, message=f"budget exhausted ({detail}); not sent",
            attempts=0, retryable=False))

    def chat(self, requests: list[ChatRequest], on_done: OnDone | None = None) -> list[Completion]:
        b = self.budget
        if self.reservations is not None:
            try:
                return self._waves(requests, on_done, max(len(requests), 1))
            finally:
                self.reservations.release()
        if b.enforced and len(requests) > 1 and getattr(self.inner, "concurrent_calls", False):
            return self._windowed(requests, on_done)
        return self._waves(requests, on_done, self.wave if b.enforced else max(len(requests), 1))

    def _waves(self, requests: list[ChatRequest], on_done: OnDone | None, step: int) -> list[Completion]:
        """Waves of `step` requests, the limits checked before each."""
        b = self.budget
        out: list[Completion] = []
        for start in range(0, len(requests), step):
            limit = b.exhausted_by
            if limit is not None:
                b.note(limit)
                for i in range(start, len(requests)):
                    out.append(self._refusal(limit))
                    if on_done is not None:
                        on_done(i, out[-1])
                b.refuse(len(requests) - start)
                break
            got = self.inner.chat(requests[start:start + step],
                                  on_done=None if on_done is None else lambda j, c, s=start: on_done(s + j, c))
            sent = [c for c in got if not c.cached]
            if sent:
                b.spend(sum(c.usage.prompt_tokens for c in sent), sum(c.usage.completion_tokens for c in sent),
                        len(sent))
            out.extend(got)
        return out

    def _windowed(self, requests: list[ChatRequest], on_done: OnDone | None) -> list[Completion]:
        """`wave` senders, each checking the limits before each request it sends: the window stays full."""
        b, out = self.budget, [None] * len(requests)
        todo, lock, failed = iter(range(len(requests))), threading.Lock(), []
        rank = caller_rank()

        def send_one() -> bool:
            """One request checked, sent and spent; False when there is nothing left to send."""
            with lock:
                i = next(todo, None)
                if i is None:
                    return False
                limit = b.exhausted_by
                if limit is not None:
                    b.note(limit)
                    b.refuse(1)
            if limit is not None:
                c = out[i] = self._refusal(limit)
                if on_done is not None:
                    on_done(i, c)
                return True
            try:
                (c,) = self.inner.chat([requests[i]], on_done=None if on_done is None else
                                       lambda _, c, i=i: on_done(i, c))
            except BaseException as e:  # a tripped breaker: raised in the caller
                failed.append(e)
                return False
            out[i] = c
            if not c.cached:
                with lock:
                    b.spend(c.usage.prompt_tokens, c.usage.completion_tokens, 1)
            return True

        def sender() -> None:
            with first_by(rank):
                while not failed:
                    with self.window:
                        if not send_one():
                            return

        threads = [threading.Thread(target=sender, daemon=True) for _ in range(min(self.wave, len(requests)))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failed:
            raise failed[0]
        return out  # type: ignore[return-value]
