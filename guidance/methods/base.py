"""What a guidance method declares about itself: its parameters (with bounds) and what it needs from the loop."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor


@dataclass(frozen=True)
class RuleParam:
    """One parameter of a guidance method: a bounded number, or one of a few named choices."""

    name: str
    default: float | str
    label: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    step: float = 0.05

    def check(self, value: Any) -> float | str:
        """The value if it is allowed, else ``ValueError`` naming the parameter and its range."""
        if self.choices:
            if value not in self.choices:
                raise ValueError(f"{self.name} must be one of {', '.join(self.choices)}; got {str(value)[:40]!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                or not self.low <= value <= self.high:
            raise ValueError(f"{self.name} must be a number in [{self.low:g}, {self.high:g}], got {value!r}")
        return float(value)


Combine = Callable[..., Tensor]


@dataclass(frozen=True)
class Method:
    """A guidance method as the registry knows it.

    ``combine(u, c, scale, **params)`` returns the guided prediction; ``scale`` may be a float or a
    per-row tensor shaped to broadcast (the sweep guides each row with its own scale).
    ``needs_uncond``: the loop must evaluate the unconditional branch. ``extra_branches``: further
    model evaluations per step (none yet). ``stateful``: carries state across steps (none yet).
    ``space``: the parameterisation ``combine`` works in by default.
    """

    name: str
    combine: Combine
    formula: str
    paper: str
    params: tuple[RuleParam, ...] = ()
    needs_uncond: bool = True
    extra_branches: tuple[str, ...] = ()
    stateful: bool = False
    label: str = ""
