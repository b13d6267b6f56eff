"""Adaptive Projected Guidance: CFG's update with momentum, a norm cap, and its part along c down-weighted."""

from __future__ import annotations

import torch
from torch import Tensor

from guidance.methods.base import GuideStep, Method, RuleParam
from guidance.methods.perp_cfg import ETA


def apg(
    eps_uncond: Tensor,
    eps_cond: Tensor,
    scale: float | Tensor,
    eta: float = 0.0,
    apg_momentum: float = 0.0,
    apg_norm_threshold: float = 15.0,
    *,
    step: GuideStep,
    state: dict,
) -> Tensor:
    """Adaptive Projected Guidance (Sadat, Hilliges & Weber 2024, "Eliminating Oversaturation and Artifacts of
    High Guidance Scales in Diffusion Models").

    Δ = c − u; with momentum β, Δ ← Δ + β Δ_prev (a running sum over the steps of this run);
    with a norm threshold r > 0, Δ ← Δ · min(1, r / ‖Δ‖); then Δ = Δ∥ + Δ⊥ split along c, and
    ε̃ = c + (w − 1)(Δ⊥ + η Δ∥).

    η = 0 (the paper's choice) drops the part of the update that only scales c up, the source of
    over-saturation; negative β averages out Δ's oscillation between steps; r caps the update's size.
    """
    diff = eps_cond - eps_uncond
    dims = list(range(1, diff.ndim))
    if apg_momentum:
        diff = diff + apg_momentum * state["running"] if "running" in state else diff
        state["running"] = diff
    if apg_norm_threshold > 0:
        norm = diff.norm(p=2, dim=dims, keepdim=True)
        diff = diff * torch.minimum(torch.ones_like(norm), apg_norm_threshold / norm)
    # float64 matches diffusers' APG exactly (the projection loses digits in half and single precision)
    v0, v1 = diff.double(), torch.nn.functional.normalize(eps_cond.double(), dim=dims)
    parallel = (v0 * v1).sum(dim=dims, keepdim=True) * v1
    perpendicular = (v0 - parallel).to(diff.dtype)
    return eps_cond + (scale - 1) * (perpendicular + eta * parallel.to(diff.dtype))


APG_MOMENTUM = RuleParam("apg_momentum", 0.0, "APG momentum β (negative averages Δ over steps)", low=-0.99,
                         high=0.99,
                         info="APG's momentum β on Δ across the steps: 0 (off) as diffusers' AdaptiveProjectedGuidance "
                              "defaults, negative values average out Δ's oscillation between steps; −0.99 to 0.99.")
APG_NORM_THRESHOLD = RuleParam("apg_norm_threshold", 15.0, "APG norm threshold r (0 = no cap)", low=0.0, high=100.0,
                               step=0.5,
                               info="APG's cap r on ‖Δ‖ per sample: r = 15 as diffusers' AdaptiveProjectedGuidance "
                                    "(with η = 0 from Sadat et al. 2024), 0 = no cap; smaller caps tame high scales.")

METHOD = Method(
    name="apg", combine=apg,
    formula="Δ ← Δ + β Δ_prev, Δ ← Δ·min(1, r/‖Δ‖);  ε = c + (w − 1)(Δ⊥ + η Δ∥), split along c",
    paper="Sadat, Hilliges & Weber 2024, Eliminating Oversaturation and Artifacts of High Guidance Scales (APG)",
    params=(ETA, APG_MOMENTUM, APG_NORM_THRESHOLD), step_aware=True, stateful=True, label="APG",
    defaults_from="η = 0 as the paper recommends; r = 15 and no momentum as diffusers' AdaptiveProjectedGuidance",
)
