"""Perpendicular CFG: guide only across a basis direction, plus η of the rest."""

from __future__ import annotations

import torch
from torch import Tensor

from guidance.methods.base import Method, RuleParam

BASES = ("uncond", "cond")


def _dims(x: Tensor) -> list[int]:
    return list(range(1, x.ndim))


def _wide(x: Tensor) -> Tensor:
    # Projections lose precision in half types; float64 matches diffusers' APG exactly.
    return x.double() if x.device.type != "mps" else x.float()


def split_guidance(eps_uncond: Tensor, eps_cond: Tensor, basis: str = "uncond") -> tuple[Tensor, Tensor]:
    """Split Δ = c − u into the part along the basis and the part perpendicular to it.

    Δ∥ = (⟨Δ, b⟩ / ⟨b, b⟩) b  and  Δ⊥ = Δ − Δ∥, per sample, where b = u (``"uncond"``)
    or b = c (``"cond"``). A basis of (near) zero norm has no direction: Δ∥ = 0 then.
    Returned in the input dtype.
    """
    if basis not in BASES:
        raise ValueError(f"basis must be one of {BASES}, got {basis!r}")
    delta = _wide(eps_cond - eps_uncond)
    b = _wide(eps_uncond if basis == "uncond" else eps_cond)
    dims = _dims(delta)
    b_hat = torch.nn.functional.normalize(b, dim=dims, eps=1e-12)
    parallel = (delta * b_hat).sum(dim=dims, keepdim=True) * b_hat
    perpendicular = delta - parallel
    return parallel.to(eps_cond.dtype), perpendicular.to(eps_cond.dtype)


def perp_cfg(
    eps_uncond: Tensor, eps_cond: Tensor, scale: float | Tensor, eta: float = 0.0, basis: str = "uncond"
) -> Tensor:
    """Perpendicular CFG: guide only across the basis direction (plus η of the rest).

    Δ = c − u = Δ∥ + Δ⊥ (see :func:`split_guidance`);
    ε̃ = c + (w − 1)(Δ⊥ + η Δ∥).

    ``basis="uncond"`` projects out the unconditional score direction (Perp-CFG);
    ``basis="cond"`` is the APG decomposition (Sadat et al. 2024) without momentum or
    norm threshold. ``scale = 1`` gives c; ``eta = 1`` gives CFG exactly; with
    ``eta = 0`` the update ε̃ − c is orthogonal to the basis.
    """
    parallel, perpendicular = split_guidance(eps_uncond, eps_cond, basis)
    return eps_cond + (scale - 1) * (perpendicular + eta * parallel)


def guidance_norms(eps_uncond: Tensor, eps_cond: Tensor, basis: str = "uncond") -> tuple[Tensor, Tensor]:
    """Per-sample ‖Δ∥‖ and ‖Δ⊥‖ (float32, shape ``[B]``) for diagnostics.

    ‖Δ∥‖ = |⟨Δ, b̂⟩| and ‖Δ⊥‖ = √(‖Δ‖² − ‖Δ∥‖²): two reductions, no projected tensors, so
    recording them every step costs little next to the model call.
    """
    if basis not in BASES:
        raise ValueError(f"basis must be one of {BASES}, got {basis!r}")
    delta = (eps_cond.float() - eps_uncond.float()).flatten(1)
    b = (eps_uncond if basis == "uncond" else eps_cond).float().flatten(1)
    b_hat = b / b.norm(dim=1, keepdim=True).clamp_min(1e-12)
    parallel = (delta * b_hat).sum(dim=1).abs()
    total_sq = delta.pow(2).sum(dim=1)
    return parallel, (total_sq - parallel.pow(2)).clamp_min(0).sqrt()


ETA = RuleParam("eta", 0.0, "η: Perp-CFG's parallel weight (1 = CFG)", low=0.0, high=1.0,
                info="Weight of Δ∥, the part of Δ = c − u along the basis (Perp-CFG, APG): η = 0 as APG's paper "
                     "recommends (Sadat et al. 2024) guides only across it, 1 is plain CFG; 0–1.")
BASIS = RuleParam("basis", "uncond", "Perp-CFG basis", choices=BASES,
                  info="The direction Perp-CFG splits Δ along: uncond (u, the default: Perp-CFG) or cond (c: APG's "
                       "split, Sadat et al. 2024, without momentum or norm cap).")

METHOD = Method(
    name="perp-cfg", combine=perp_cfg, formula="ε = c + (w − 1)(Δ⊥ + η Δ∥),  Δ = c − u split along the basis",
    paper="Perpendicular CFG; the cond basis is APG's split (Sadat et al. 2024) without momentum",
    params=(ETA, BASIS), label="Perp-CFG",
)
