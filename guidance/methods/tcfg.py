"""Tangential CFG: u projected on the first singular direction of [c; u] before CFG."""

from __future__ import annotations

import torch
from torch import Tensor

from guidance.methods.base import Method


def tangential_uncond(eps_cond: Tensor, eps_uncond: Tensor) -> Tensor:
    """u projected onto the first right-singular vector of the 2 × D matrix [c; u] (per sample, float32)."""
    preds = torch.stack([eps_cond, eps_uncond], dim=1).float().flatten(2)  # [B, 2, D]
    _, _, vh = torch.linalg.svd(preds, full_matrices=False)
    first = vh[:, :1]  # [B, 1, D]
    u = eps_uncond.reshape(eps_uncond.shape[0], 1, -1).float()
    return ((u @ first.transpose(-2, -1)) @ first).reshape(eps_uncond.shape).to(eps_cond.dtype)


def tcfg(eps_uncond: Tensor, eps_cond: Tensor, scale: float | Tensor) -> Tensor:
    """Tangential Classifier-Free Guidance (Sun et al. 2025, "TCFG: Tangential Damping Classifier-Free Guidance").

    The SVD of [c; u] gives the direction the two predictions share (first singular vector) and the one
    where they differ; u keeps only the shared component, u' = (u·v₁) v₁, and ε̃ = u' + w (c − u').
    Removing u's "tangential" component damps the part of CFG that pushes off the data manifold.
    """
    projected = tangential_uncond(eps_cond, eps_uncond)
    return projected + scale * (eps_cond - projected)


METHOD = Method(
    name="tcfg", combine=tcfg,
    formula="u' = (u·v₁) v₁ with v₁ the first singular vector of [c; u];  ε = u' + w (c − u')",
    paper="Sun et al. 2025, TCFG: Tangential Damping Classifier-Free Guidance", label="TCFG",
)
