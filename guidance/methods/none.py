"""No guidance: the conditional prediction alone."""

from __future__ import annotations

from torch import Tensor

from guidance.methods.base import Method


def conditional_only(eps_uncond: Tensor | None, eps_cond: Tensor, scale: float | Tensor = 1.0) -> Tensor:
    """ε̃ = ε(x, t | c): the model as trained, no guidance (``scale`` is ignored)."""
    return eps_cond


METHOD = Method(
    name="none", combine=conditional_only, formula="ε = ε(x, t | c)", paper="", needs_uncond=False,
    label="none (conditional model only)",
)
