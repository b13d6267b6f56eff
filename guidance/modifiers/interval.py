"""Guidance in a limited interval of the steps."""

from __future__ import annotations

from guidance.methods.base import RuleParam
from guidance.modifiers.base import Modifier, Options, RunFacts

# As diffusers' guiders: step i of n guides when int(start·n) ≤ i < int(end·n).
INTERVAL_START = RuleParam("interval_start", 0.0, "guide from (fraction of the steps)", low=0.0, high=1.0,
                           info="Fraction of the steps before which guidance is off (c alone, u not evaluated): 0 "
                                "guides from the start, Kynkäänniemi et al. 2024 guide only a middle interval.")
INTERVAL_END = RuleParam("interval_end", 1.0, "guide until (fraction of the steps)", low=0.0, high=1.0,
                         info="Fraction of the steps after which guidance is off again: 1 guides to the end, and "
                              "0.75 with a start of 0.25 is the middle half that keeps the most variety on the toy.")


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
