"""CFG-Zero*: CFG against an optimally rescaled unconditional prediction, with the first steps zeroed."""

from __future__ import annotations

import torch
from torch import Tensor

from guidance.methods.base import GuideStep, Method, RuleParam


def optimal_scale(eps_cond: Tensor, eps_uncond: Tensor) -> Tensor:
    """α* = ⟨c, u⟩ / ‖u‖² per sample (float32), shaped to broadcast: the multiple of u closest to c."""
    c, u = eps_cond.flatten(1).float(), eps_uncond.flatten(1).float()
    alpha = (c * u).sum(dim=1, keepdim=True) / (u.pow(2).sum(dim=1, keepdim=True) + 1e-8)
    return alpha.view(-1, *(1,) * (eps_cond.ndim - 1)).to(eps_cond.dtype)


def cfg_zero_star(
    eps_uncond: Tensor, eps_cond: Tensor, scale: float | Tensor, zero_init_steps: int = 1, *, step: GuideStep
) -> Tensor:
    """CFG-Zero* (Fan et al. 2025, "CFG-Zero*: Improved Classifier-Free Guidance for Flow Matching Models").

    ε̃ = α* u + w (c − α* u) with α* = ⟨c, u⟩ / ‖u‖², and ε̃ = 0 for the first ``zero_init_steps`` steps.
    Early on u is a poor estimate, and guiding away from it is mostly error; α* shrinks u onto c's
    direction first. (Designed for flow matching, where a zero output means "stand still"; on an
    ε-model the zeroed steps take DDIM's x̂0 = x_t/√ᾱ, as diffusers' guider does.)
    """
    if step.index < zero_init_steps:
        return torch.zeros_like(eps_cond)
    scaled = eps_uncond * optimal_scale(eps_cond, eps_uncond)
    return scaled + scale * (eps_cond - scaled)


ZERO_INIT_STEPS = RuleParam("zero_init_steps", 1, "CFG-Zero*: steps zeroed at the start", low=0, high=10, step=1,
                            integer=True,
                            info="CFG-Zero* (Fan et al. 2025): how many first steps output zero, 1 as diffusers' "
                                 "guider; 0 keeps only the optimised scale α*, and a few steps at most make sense.")

METHOD = Method(
    name="cfg-zero-star", combine=cfg_zero_star, formula="ε = α* u + w (c − α* u),  α* = ⟨c,u⟩/‖u‖²;  ε = 0 in the "
    "first steps", paper="Fan et al. 2025, CFG-Zero*: Improved Classifier-Free Guidance for Flow Matching Models",
    params=(ZERO_INIT_STEPS,), step_aware=True, label="CFG-Zero*",
    defaults_from="one zeroed step, as diffusers' ClassifierFreeZeroStarGuidance",
)
