"""Moving a model output between parameterisations: ε, x0 and v, under the variance-preserving process.

x_t = √ᾱ x0 + √(1−ᾱ) ε, and v = √ᾱ ε − √(1−ᾱ) x0 (Salimans & Ho 2022). Guidance rules act on ε (or on
x0 for rules that ask for it); the loop converts a v- or x0-predicting model's output with these.
"""

from __future__ import annotations

import torch
from torch import Tensor

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def eps_to_x0(eps: Tensor, x_t: Tensor, alpha_bar: Tensor | float) -> Tensor:
    """x0 = (x_t − √(1−ᾱ) ε) / √ᾱ under the variance-preserving forward process."""
    a = torch.as_tensor(alpha_bar, dtype=torch.float32, device=x_t.device)
    return ((x_t.float() - (1 - a).sqrt() * eps.float()) / a.sqrt()).to(eps.dtype)


def x0_to_eps(x0: Tensor, x_t: Tensor, alpha_bar: Tensor | float) -> Tensor:
    """ε = (x_t − √ᾱ x0) / √(1−ᾱ), the inverse of :func:`eps_to_x0`."""
    a = torch.as_tensor(alpha_bar, dtype=torch.float32, device=x_t.device)
    return ((x_t.float() - a.sqrt() * x0.float()) / (1 - a).sqrt()).to(x0.dtype)


def to_eps(output: Tensor, x_t: Tensor, alpha_bar: Tensor | float, prediction_type: str = "epsilon") -> Tensor:
    """A model output in its own parameterisation as ε (float32 unless it already is ε).

    ``"v_prediction"``: ε = √ᾱ v + √(1−ᾱ) x_t; ``"sample"``: ε = (x_t − √ᾱ x0) / √(1−ᾱ).
    ``"epsilon"`` returns ``output`` itself.
    """
    if prediction_type == "epsilon":
        return output
    a = torch.as_tensor(alpha_bar, dtype=torch.float32, device=x_t.device)
    if prediction_type == "v_prediction":
        return a.sqrt() * output.float() + (1 - a).sqrt() * x_t.float()
    if prediction_type == "sample":
        return x0_to_eps(output.float(), x_t, a)
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def from_eps(eps: Tensor, x_t: Tensor, alpha_bar: Tensor | float, prediction_type: str = "epsilon") -> Tensor:
    """The inverse of :func:`to_eps`: ε back to the parameterisation the scheduler expects.

    v = (ε − √(1−ᾱ) x_t) / √ᾱ. Keep ``eps`` in float32 for v: at t ≈ T, √ᾱ ≈ 0.006 and the
    subtraction cancels all but the last few digits of a half-precision ε.
    """
    if prediction_type == "epsilon":
        return eps
    a = torch.as_tensor(alpha_bar, dtype=torch.float32, device=x_t.device)
    if prediction_type == "v_prediction":
        return (eps.float() - (1 - a).sqrt() * x_t.float()) / a.sqrt()
    if prediction_type == "sample":
        return eps_to_x0(eps.float(), x_t, a)
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
