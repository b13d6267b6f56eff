"""What a modifier declares about itself, and the facts about a run that its checks read."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from guidance.methods.base import RuleParam

Options = Mapping[str, Any]  # a rule's parameter values by registry name


@dataclass(frozen=True)
class RunFacts:
    """What a check may need to know about the run a rule is used in, before any model work."""

    scheduler: str = "ddim"  # the scheduler's registry name
    pixel_space: bool = True  # the model denoises pixels (not latents)
    ddim_eta: float = 0.0  # DDIM's stochasticity (0 = deterministic)


@dataclass(frozen=True)
class Modifier:
    """A modifier of the registry.

    ``on(options)``: whether the modifier acts with these parameter values. While on:

    * ``extra_branch`` names a further model evaluation the loop stacks at guided steps (PAG's ``"perturbed"``);
      the model side reads the modifier's parameters from ``ModelCall.options`` to know how to run it;
    * ``acts_at(options, index, num_steps)`` says whether guidance acts at a step at all (the interval): outside,
      the conditional prediction is used alone and the unconditional branch is not evaluated;
    * ``adjust(guided, predictions, options)`` changes the method's guided prediction, given every branch's
      prediction by name in the same space (PAG's push, rescale); modifiers adjust in ascending ``order``;
    * ``scheduler_options(options)`` are handed to the scheduler (dynamic thresholding is the scheduler's job);
    * ``check(options, facts)`` raises ``ValueError`` for what cannot work, before any model work.

    ``example`` switches it on as its paper uses it (the docs and the combination suite use it).
    """

    name: str
    params: tuple[RuleParam, ...]
    example: dict[str, Any]
    on: Callable[[Options], bool]
    formula: str
    paper: str
    label: str = ""
    extra_branch: str | None = None
    acts_at: Callable[[Options, int, int], bool] | None = None
    adjust: Callable[[Tensor, Mapping[str, Tensor], Options], Tensor] | None = None
    order: int = 0
    scheduler_options: Callable[[Options], dict[str, Any]] | None = None
    check: Callable[[Options, RunFacts], None] | None = None

    def used(self, options: Options) -> dict[str, Any]:
        """Its parameters' values, when on (for metadata)."""
        return {p.name: options[p.name] for p in self.params} if self.on(options) else {}
