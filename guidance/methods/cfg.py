"""Classifier-free guidance."""

from __future__ import annotations

from torch import Tensor

from guidance.methods.base import Method


def cfg(eps_uncond: Tensor, eps_cond: Tensor, scale: float | Tensor) -> Tensor:
    """Classifier-free guidance (Ho & Salimans 2022).

    ε̃ = u + w (c − u), with u = ε(x, t), c = ε(x, t | c) and w = ``scale``.
    ``scale = 1`` returns the conditional prediction, ``scale = 0`` the unconditional.
    """
    return eps_uncond + scale * (eps_cond - eps_uncond)


METHOD = Method(
    name="cfg", combine=cfg, formula="ε = u + w (c − u)",
    paper="Ho & Salimans 2022, Classifier-Free Diffusion Guidance", label="CFG",
)
