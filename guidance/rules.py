"""Guidance rules: how a conditional and an unconditional prediction become one.

Every rule is a pure function over batch-first tensors ``[B, ...]``. Norms and
projections are taken per sample, over all non-batch dimensions. The rules are
written for noise predictions (epsilon) but are linear-algebra only, so they apply
to any prediction; :func:`guide` converts to the x0 space first when asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Basis = Literal["uncond", "cond"]
Space = Literal["eps", "x0"]

RULE_NAMES = ("none", "cfg", "perp-cfg")
BASES = ("uncond", "cond")
SPACES = ("eps", "x0")

FORMULAS = {
    "none": "ε = ε(x, t | c)",
    "cfg": "ε = u + w (c − u)",
    "perp-cfg": "ε = c + (w − 1)(Δ⊥ + η Δ∥),  Δ = c − u split along the basis",
    "rescale": "ε ← φ · ε · std(c)/std(ε) + (1 − φ) · ε",
}


def _dims(x: Tensor) -> list[int]:
    return list(range(1, x.ndim))


def _wide(x: Tensor) -> Tensor:
    # Projections lose precision in half types; float64 matches diffusers' APG exactly.
    return x.double() if x.device.type != "mps" else x.float()


def cfg(eps_uncond: Tensor, eps_cond: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance (Ho & Salimans 2022).

    ε̃ = u + w (c − u), with u = ε(x, t), c = ε(x, t | c) and w = ``scale``.
    ``scale = 1`` returns the conditional prediction, ``scale = 0`` the unconditional.
    """
    return eps_uncond + scale * (eps_cond - eps_uncond)


def split_guidance(eps_uncond: Tensor, eps_cond: Tensor, basis: Basis = "uncond") -> tuple[Tensor, Tensor]:
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
    eps_uncond: Tensor,
    eps_cond: Tensor,
    scale: float,
    eta: float = 0.0,
    basis: Basis = "uncond",
) -> Tensor:
    """Perpendicular CFG: guide only across the basis direction (plus η of the rest).

    Δ = c − u = Δ∥ + Δ⊥ (see :func:`split_guidance`);
    ε̃ = c + (w − 1)(Δ⊥ + η Δ∥).

    ``basis="uncond"`` projects out the unconditional score direction (Perp-CFG);
    ``basis="cond"`` is the APG decomposition (Sadat et al. 2024) without momentum or
    norm threshold. ``scale = 1`` gives c; ``eta = 1`` gives :func:`cfg` exactly; with
    ``eta = 0`` the update ε̃ − c is orthogonal to the basis.
    """
    parallel, perpendicular = split_guidance(eps_uncond, eps_cond, basis)
    return eps_cond + (scale - 1) * (perpendicular + eta * parallel)


def rescale(guided: Tensor, eps_cond: Tensor, phi: float) -> Tensor:
    """CFG rescale (Lin et al. 2023, "Common diffusion noise schedules ... are flawed").

    ε_r = ε̃ · std(c) / std(ε̃) (per sample), then ε = φ ε_r + (1 − φ) ε̃.
    Undoes the variance growth of large guidance scales; φ = 0 is a no-op.
    """
    if phi == 0:
        return guided
    std_cond = eps_cond.std(dim=_dims(eps_cond), keepdim=True)
    std_guided = guided.std(dim=_dims(guided), keepdim=True)
    rescaled = guided * (std_cond / std_guided)
    return phi * rescaled + (1 - phi) * guided


def guidance_norms(eps_uncond: Tensor, eps_cond: Tensor, basis: Basis = "uncond") -> tuple[Tensor, Tensor]:
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


@dataclass(frozen=True)
class GuidanceRule:
    """A named rule with its parameters; ``apply`` is what the sampler loop calls."""

    name: str = "cfg"
    scale: float = 7.5
    eta: float = 0.0
    basis: Basis = "uncond"
    rescale: float = 0.0
    space: Space = "eps"

    def __post_init__(self) -> None:
        validate_rule(self)

    @property
    def needs_uncond(self) -> bool:
        return self.name != "none"

    @property
    def formula(self) -> str:
        text = FORMULAS[self.name]
        if self.rescale and self.name != "none":
            text += f";  then {FORMULAS['rescale']}"
        return text

    def apply(
        self,
        eps_uncond: Tensor | None,
        eps_cond: Tensor,
        x_t: Tensor | None = None,
        alpha_bar: Tensor | float | None = None,
    ) -> Tensor:
        return guide(eps_uncond, eps_cond, self, x_t=x_t, alpha_bar=alpha_bar)


def validate_rule(rule: GuidanceRule) -> None:
    """Raise ``ValueError`` with a readable message for out-of-range parameters."""
    if rule.name not in RULE_NAMES:
        raise ValueError(f"guidance must be one of {RULE_NAMES}, got {rule.name!r}")
    if rule.basis not in BASES:
        raise ValueError(f"basis must be one of {BASES}, got {rule.basis!r}")
    if rule.space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {rule.space!r}")
    for field, value, low, high in (
        ("scale", rule.scale, 0.0, 100.0),
        ("eta", rule.eta, 0.0, 1.0),
        ("rescale", rule.rescale, 0.0, 1.0),
    ):
        if not isinstance(value, (int, float)) or value != value or not low <= value <= high:
            raise ValueError(f"{field} must be a number in [{low:g}, {high:g}], got {value!r}")


def eps_to_x0(eps: Tensor, x_t: Tensor, alpha_bar: Tensor | float) -> Tensor:
    """x0 = (x_t − √(1−ᾱ) ε) / √ᾱ under the variance-preserving forward process."""
    a = torch.as_tensor(alpha_bar, dtype=torch.float32, device=x_t.device)
    return ((x_t.float() - (1 - a).sqrt() * eps.float()) / a.sqrt()).to(eps.dtype)


def x0_to_eps(x0: Tensor, x_t: Tensor, alpha_bar: Tensor | float) -> Tensor:
    """ε = (x_t − √ᾱ x0) / √(1−ᾱ), the inverse of :func:`eps_to_x0`."""
    a = torch.as_tensor(alpha_bar, dtype=torch.float32, device=x_t.device)
    return ((x_t.float() - a.sqrt() * x0.float()) / (1 - a).sqrt()).to(x0.dtype)


PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def to_eps(output: Tensor, x_t: Tensor, alpha_bar: Tensor | float, prediction_type: str = "epsilon") -> Tensor:
    """A model output in its own parameterisation as ε (float32 unless it already is ε).

    ``"v_prediction"``: ε = √ᾱ v + √(1−ᾱ) x_t (v = √ᾱ ε − √(1−ᾱ) x0, Salimans & Ho 2022);
    ``"sample"``: ε = (x_t − √ᾱ x0) / √(1−ᾱ). ``"epsilon"`` returns ``output`` itself.
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


def guide(
    eps_uncond: Tensor | None,
    eps_cond: Tensor,
    rule: GuidanceRule,
    *,
    x_t: Tensor | None = None,
    alpha_bar: Tensor | float | None = None,
) -> Tensor:
    """Apply ``rule`` (by name) and optional rescale, in the eps or x0 space.

    In ``space="x0"`` both predictions are mapped to x0 with :func:`eps_to_x0` using the
    scheduler's ᾱ_t, combined there (as in APG), and mapped back to ε.
    """
    if rule.name == "none":
        return eps_cond
    if eps_uncond is None:
        raise ValueError(f"rule {rule.name!r} needs the unconditional prediction")
    if rule.space == "x0":
        if x_t is None or alpha_bar is None:
            raise ValueError("space='x0' needs x_t and alpha_bar")
        u, c = eps_to_x0(eps_uncond, x_t, alpha_bar), eps_to_x0(eps_cond, x_t, alpha_bar)
    else:
        u, c = eps_uncond, eps_cond
    if rule.name == "cfg":
        out = cfg(u, c, rule.scale)
    else:
        out = perp_cfg(u, c, rule.scale, eta=rule.eta, basis=rule.basis)
    if rule.rescale:
        out = rescale(out, c, rule.rescale)
    if rule.space == "x0":
        out = x0_to_eps(out, x_t, alpha_bar)
    return out
