"""What teacher tokens cost: the `[teacher]` prices, online and batch.

Reads the prices of a `TeacherSection` (`price_prompt_per_mtok`,
`price_completion_per_mtok`, per million tokens, and `batch_discount`, the
share a batch API takes off both); writes nothing. `distill plan` prices its
projection with it and `--max-cost` counts a run's spend with it
(teacher/budget.py). The currency is whatever the prices are in (the README
and the table say USD).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ConfigError


@dataclass(frozen=True)
class Prices:
    prompt_per_mtok: float
    completion_per_mtok: float
    batch_discount: float = 0.5

    @classmethod
    def of(cls, section: Any) -> "Prices | None":
        """The section's prices, or None when it has none."""
        if section.price_prompt_per_mtok is None or section.price_completion_per_mtok is None:
            return None
        return cls(float(section.price_prompt_per_mtok), float(section.price_completion_per_mtok),
                   float(section.batch_discount))

    @classmethod
    def required(cls, section: Any, what: str, source: str | None = None) -> "Prices":
        """The section's prices, or one ConfigError saying where to set them (`what` needs them)."""
        prices = cls.of(section)
        if prices is None:
            raise ConfigError(f"{source or '<defaults>'}: {what} needs the teacher's prices: set [teacher] "
                              "price_prompt_per_mtok and price_completion_per_mtok (per million tokens)")
        return prices

    def cost(self, prompt_tokens: float, completion_tokens: float, *, batch: bool = False) -> float:
        """The price of these tokens, online or (`batch`) at the batch discount."""
        online = (prompt_tokens * self.prompt_per_mtok + completion_tokens * self.completion_per_mtok) / 1e6
        return online * (1.0 - self.batch_discount) if batch else online

    def to_dict(self) -> dict[str, float]:
        return asdict(self)
