"""How to sample, apart from what to guide with: one value built from a request once and handed down to the loop."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

    from guidance.sampler import StepState


@dataclass(frozen=True)
class SamplingSettings:
    """The sampler's own parameters (in their own namespace: a method's η is not DDIM's η) and the run's hooks.

    ``width``/``height`` None mean the model's native size. ``ddim_eta`` is DDIM's stochasticity (Song et al. 2021:
    0 deterministic, 1 the DDPM posterior's noise); other schedulers ignore it. ``callback`` sees every step;
    ``preview`` maps the predicted x̂0 to RGB in [−1, 1] for the callback and the saturation diagnostics (a latent
    decoder); ``diagnostics`` False skips the per-step trace (benchmarks against diffusers).
    """

    steps: int = 25
    seed: int = 0
    num_images: int = 1
    width: int | None = None
    height: int | None = None
    scheduler: str = "ddim"
    ddim_eta: float = 0.0
    diagnostics: bool = True
    callback: Callable[[StepState], None] | None = None
    preview: Callable[[Tensor], Tensor] | None = None

    @classmethod
    def from_request(cls, values: Mapping[str, Any], **hooks: Any) -> SamplingSettings:
        """The settings a validated request names (the fields it lacks keep their defaults), plus the run's hooks."""
        names = {f.name for f in fields(cls)} - {"callback", "preview", "diagnostics"}
        return cls(**{k: values[k] for k in names if k in values}, **hooks)

    def replace(self, **changes: Any) -> SamplingSettings:
        return replace(self, **changes)


def settings_from(settings: SamplingSettings | None, overrides: Mapping[str, Any]) -> SamplingSettings:
    """``settings``, or settings from keyword arguments (``steps=10, seed=3`` in a notebook), not both."""
    if settings is None:
        return SamplingSettings(**overrides)
    return settings.replace(**overrides) if overrides else settings
