"""Moving a model output between parameterisations: ε, x0 and v, under the variance-preserving process, and the
velocity of rectified flow.

x_t = √ᾱ x0 + √(1−ᾱ) ε, and v = √ᾱ ε − √(1−ᾱ) x0 (Salimans & Ho 2022). Guidance rules act on ε (or on
x0 for rules that ask for it); the loop converts a v- or x0-predicting model's output with these. On a rectified
flow x_t = (1 − σ) x0 + σ ε and the model predicts v = ε − x0, which the rules guide as it is (:class:`NoiseLevel`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")  # on variance-preserving schedules; "flow" on flows


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


@dataclass(frozen=True)
class NoiseLevel:
    """Where x_t sits between data and noise: x_t = a·x0 + b·ε, and which prediction the rules guide.

    Variance-preserving diffusion (DDPM/DDIM/Euler on ᾱ): a = √ᾱ, b = √(1−ᾱ), and rules act on ε. Rectified flow
    (SD3, Flux; ``FlowMatchEulerDiscreteScheduler``): a = 1 − σ, b = σ, and rules act on the model's velocity
    v = ε − x0 (Esser et al. 2024): a method written for ε is then the same formula on v, which for CFG is the same
    thing (affine maps commute with affine combinations) and for a norm-based method (APG, CFG-Zero*, rescale) is
    the flow form its paper writes.
    """

    a: Tensor
    b: Tensor
    flow: bool = False

    @classmethod
    def vp(cls, alpha_bar: Tensor | float) -> NoiseLevel:
        ab = torch.as_tensor(alpha_bar, dtype=torch.float32)
        return cls(ab.sqrt(), (1 - ab).sqrt())

    @classmethod
    def rectified_flow(cls, sigma: Tensor | float) -> NoiseLevel:
        s = torch.as_tensor(sigma, dtype=torch.float32)
        return cls(1 - s, s, flow=True)

    @property
    def alpha_bar(self) -> Tensor:
        """ᾱ of the variance-preserving point with the same signal-to-noise ratio."""
        return self.a**2 / (self.a**2 + self.b**2)

    def x0(self, guided: Tensor, x_t: Tensor) -> Tensor:
        """x̂0 from the guided prediction: (x_t − b ε)/a, or x_t − σ v on a flow."""
        a, b = (c.to(x_t.device) for c in (self.a, self.b))
        out = x_t.float() - b * guided.float() if self.flow else (x_t.float() - b * guided.float()) / a
        return out.to(guided.dtype)

    def from_x0(self, x0: Tensor, x_t: Tensor) -> Tensor:
        """The guided prediction that has this x̂0: ε = (x_t − a x0)/b, or v = (x_t − x0)/σ on a flow."""
        a, b = (c.to(x_t.device) for c in (self.a, self.b))
        out = (x_t.float() - x0.float()) / b if self.flow else (x_t.float() - a * x0.float()) / b
        return out.to(x0.dtype)


def as_level(level: NoiseLevel | Tensor | float) -> NoiseLevel:
    """A noise level, from itself or from a variance-preserving ᾱ."""
    return level if isinstance(level, NoiseLevel) else NoiseLevel.vp(level)


def to_guided(output: Tensor, x_t: Tensor, level: NoiseLevel, prediction_type: str) -> Tensor:
    """A model output as the prediction the rules guide: ε on a VP level (:func:`to_eps`), the velocity on a flow."""
    if level.flow:
        if prediction_type != "flow":
            raise ValueError(f"a rectified-flow scheduler needs a velocity-predicting model, got {prediction_type!r}")
        return output.float()
    return to_eps(output, x_t, level.alpha_bar, prediction_type)


def from_guided(guided: Tensor, x_t: Tensor, level: NoiseLevel, prediction_type: str) -> Tensor:
    """The inverse of :func:`to_guided`: back to what the scheduler expects."""
    return guided if level.flow else from_eps(guided, x_t, level.alpha_bar, prediction_type)
