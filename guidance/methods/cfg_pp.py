"""CFG++: x̂0 from the guided prediction, re-noised with the unconditional one (a DDIM step)."""

from __future__ import annotations

import torch
from torch import Tensor

from guidance.methods.base import GuideStep, Method


def cfg_pp(eps_uncond: Tensor, eps_cond: Tensor, scale: float | Tensor, *, step: GuideStep) -> Tensor:
    """CFG++ (Chung et al. 2024, "CFG++: Manifold-constrained Classifier Free Guidance for Diffusion Models").

    With λ = ``scale`` ∈ [0, 1] and ε_λ = u + λ (c − u), the DDIM step becomes
    x_{t−1} = √ᾱ_{t−1} · (x_t − √(1−ᾱ_t) ε_λ)/√ᾱ_t + √(1−ᾱ_{t−1}) · u:
    the image estimate follows the guided prediction, the re-noising the unconditional one. DDIM is
    linear in ε, so the returned ε* = (c₂ u − c₁ ε_λ) / (c₂ − c₁), with c₁ = √ᾱ_{t−1}√(1−ᾱ_t)/√ᾱ_t and
    c₂ = √(1−ᾱ_{t−1}), makes the scheduler's own DDIM step take exactly that update.
    """
    guided = eps_uncond + scale * (eps_cond - eps_uncond)
    a = torch.as_tensor(step.alpha_bar, dtype=torch.float64)
    a_prev = torch.as_tensor(step.alpha_bar_prev, dtype=torch.float64)
    c1 = (a_prev.sqrt() * (1 - a).sqrt() / a.sqrt()).item()
    c2 = (1 - a_prev).sqrt().item()
    return ((c2 * eps_uncond.double() - c1 * guided.double()) / (c2 - c1)).to(eps_cond.dtype)


METHOD = Method(
    name="cfg++", combine=cfg_pp, formula="x̂0 from ε_λ = u + λ(c − u), re-noised with u: x_{t−1} = √ᾱ_{t−1} x̂0(ε_λ) + "
    "√(1−ᾱ_{t−1}) u", paper="Chung et al. 2024, CFG++: Manifold-constrained Classifier Free Guidance",
    step_aware=True, needs_ddim=True, scale_high=1.0, typical_scale=0.8, label="CFG++",
    defaults_from="λ = scale ∈ [0, 1]; the paper uses λ ≈ 0.6–0.8 for text-to-image",
)
