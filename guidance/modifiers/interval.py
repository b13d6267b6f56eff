"""Guidance in a limited interval of the steps."""

from __future__ import annotations

from guidance.methods.base import RuleParam
from guidance.modifiers.base import Modifier, Options, RunFacts

# As diffusers' guiders: step i of n guides when int(start·n) ≤ i < int(end·n).
INTERVAL_START = RuleParam("interval_start", 0.0, "guide from (fraction of the steps)", low=0.0, high=1.0)
INTERVAL_END = RuleParam("interval_end", 1.0, "guide until (fraction of the steps)", low=0.0, high=1.0)


def in_interval(options: Options, index: int, num_steps: int) -> bool:
    """Kynkäänniemi et al. 2024, "Applying Guidance in a Limited Interval Improves Sample and Distribution Quality
    in Diffusion Models": guidance helps in the middle of the schedule and hurts at both ends, so it acts only for
    steps i of n with ⌊start·n⌋ ≤ i < ⌊end·n⌋; elsewhere ε = c and u is not evaluated (the steps cost one model row).
    """
    return int(options["interval_start"] * num_steps) <= index < int(options["interval_end"] * num_steps)


def check_interval(options: Options, facts: RunFacts) -> None:
    if options["interval_start"] >= options["interval_end"]:
        raise ValueError(f"interval_start ({options['interval_start']:g}) must be before interval_end "
                         f"({options['interval_end']:g})")


MODIFIER = Modifier(
    name="interval", params=(INTERVAL_START, INTERVAL_END), example={"interval_start": 0.2, "interval_end": 0.8},
    on=lambda o: (o["interval_start"], o["interval_end"]) != (INTERVAL_START.default, INTERVAL_END.default),
    formula="guidance only for steps i with ⌊start·n⌋ ≤ i < ⌊end·n⌋; elsewhere ε = c (u not evaluated)",
    paper="Kynkäänniemi et al. 2024, Applying Guidance in a Limited Interval Improves Sample and Distribution "
          "Quality in Diffusion Models",
    label="guidance interval", acts_at=in_interval, check=check_interval,
)
