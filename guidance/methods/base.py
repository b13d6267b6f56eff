"""What a guidance method declares about itself: its parameters (with bounds) and what it needs from the loop."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor


@dataclass(frozen=True)
class RuleParam:
    """One parameter of a guidance method: a bounded number (``integer`` for counts), or one of a few choices.

    ``off`` is a value outside ``[low, high]`` that is also allowed and means "not used" (a threshold's 0).
    """

    name: str
    default: float | str
    label: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    step: float = 0.05
    integer: bool = False
    off: float | None = None
    needs: str = ""  # "attention" (PAG) or "pixels" (thresholding): what a model must have for it to apply
    info: str = ""  # one sentence: what it does, the paper's default, the range where it makes sense

    def check(self, value: Any) -> float | int | str:
        """The value if it is allowed, else ``ValueError`` naming the parameter and its range."""
        if self.choices:
            if value not in self.choices:
                raise ValueError(f"{self.name} must be one of {', '.join(self.choices)}; got {str(value)[:40]!r}")
            return value
        number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if number and self.off is not None and value == self.off:
            return int(value) if self.integer else float(value)
        if not number or not self.low <= value <= self.high:
            also = f" ({self.off:g} = off)" if self.off is not None else ""
            raise ValueError(f"{self.name} must be a number in [{self.low:g}, {self.high:g}]{also}, got {value!r}")
        if self.integer:
            if value != int(value):
                raise ValueError(f"{self.name} must be a whole number, got {value!r}")
            return int(value)
        return float(value)


@dataclass(frozen=True)
class GuideStep:
    """Where in the run a rule is applied: what step-aware and stateful methods read.

    ``alpha_bar_prev`` is ᾱ of the step the scheduler is stepping to (DDIM's; 1 past the end).
    """

    index: int
    num_steps: int
    alpha_bar: Tensor | float
    alpha_bar_prev: Tensor | float | None = None


Combine = Callable[..., Tensor]


@dataclass(frozen=True)
class Method:
    """A guidance method as the registry knows it.

    ``combine(u, c, scale, **params)`` returns the guided prediction; ``scale`` may be a float or a per-row
    tensor shaped to broadcast (the sweep guides each row with its own scale). Methods that need the step
    (``step_aware``) also get ``step=GuideStep``; ``stateful`` ones also get ``state``, a dict that lives for
    one run (APG's momentum).

    ``uncond_branch``: which model evaluation plays u — ``"uncond"`` (the null condition or negative prompt)
    or ``"weak"`` (autoguidance: a weaker model, conditioned). ``needs_uncond`` False: the conditional
    prediction alone. ``needs_ddim``: the method rewrites a deterministic DDIM step (CFG++) and refuses other
    schedulers. Further evaluations (PAG's perturbed branch) belong to modifiers (``guidance.modifiers``).
    """

    name: str
    combine: Combine
    formula: str
    paper: str
    params: tuple[RuleParam, ...] = ()
    needs_uncond: bool = True
    uncond_branch: str = "uncond"
    step_aware: bool = False
    stateful: bool = False
    needs_ddim: bool = False
    model_role: str = ""  # the profile role whose model draws instead (a distilled student that takes w itself)
    scale_high: float | None = None  # a tighter cap on the scale than the registry's (CFG++'s λ ≤ 1)
    typical_scale: float | None = None  # the paper's scale where the registry's default does not fit (CFG++'s λ)
    label: str = ""
    defaults_from: str = ""  # where the parameters' defaults come from (a paper's recommendation, diffusers)

