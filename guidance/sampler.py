"""The one denoising loop that every tab drives.

Read it top to bottom: draw noise, then for each timestep scale the input, evaluate
the unconditional and conditional branches in one batched model call, combine them
with a guidance rule, optionally add a classifier gradient, and let the diffusers
scheduler take the step. Models are passed in as *denoisers*: callables that take the
branch-stacked input and return the model output for every row (see :class:`Denoiser`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import torch
from diffusers import DDIMScheduler
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor

from guidance.methods.base import GuideStep
from guidance.methods.perp_cfg import guidance_norms
from guidance.parameterization import eps_to_x0, from_eps, to_eps
from guidance.rules import GuidanceRule


@dataclass(frozen=True)
class ModelCall:
    """What the loop asks of the model at one step.

    The input holds ``len(branches)`` stacked copies of the batch, in this order;
    ``"uncond"`` rows use the null condition (or the negative prompt), ``"cond"`` rows the
    condition. ``step_index / num_steps`` lets a model switch parts on only for a range of
    the schedule (ControlNet's guidance start/end).
    """

    branches: tuple[str, ...]  # "uncond", "cond", and for some rules "weak" (autoguidance), "perturbed" (PAG)
    step_index: int
    num_steps: int

    @property
    def fraction(self) -> float:
        return self.step_index / self.num_steps


class Denoiser(Protocol):
    def __call__(self, x: Tensor, t: Tensor, call: ModelCall) -> Tensor: ...


@dataclass(frozen=True)
class ClassifierContext:
    """Extra facts a classifier may use, e.g. to judge the predicted x0 instead of x_t."""

    alpha_bar: Tensor
    eps: Tensor
    step_index: int
    num_steps: int


LogProb = Callable[[Tensor, Tensor, ClassifierContext], Tensor]


@dataclass
class ClassifierGuidance:
    """Classifier guidance (Dhariwal & Nichol 2021) with ``log_prob(x_t, t, ctx) -> [B]``.

    ``mode="eps"``: ε ← ε − √(1−ᾱ_t) · s · ∇ₓ log p(y | x_t) (exact for DDIM).
    ``mode="mean"``: the ancestral form, μ ← μ + s · Σ_t · ∇ₓ log p(y | x_t), with
    ``variance(t, model_output, x_t)`` giving Σ_t of the step; it is added after the
    scheduler's step, which equals shifting the mean before the noise is added.
    ``scale = 0`` still records log p(y | x_t) for the diagnostics.
    """

    log_prob: LogProb
    scale: float
    mode: Literal["eps", "mean"] = "eps"
    variance: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None


@dataclass
class StepState:
    """Handed to the per-step callback. ``rgb`` is the predicted x0 as an image in [−1, 1] (the ``preview``
    decoder's output for latent models, x0 itself for pixel models)."""

    step_index: int
    num_steps: int
    t: Tensor
    x: Tensor
    pred_x0: Tensor
    diagnostics: dict[str, Tensor]
    rgb: Tensor | None = None


@dataclass
class SampleResult:
    sample: Tensor
    trace: list[dict[str, np.ndarray | int | float]] = field(default_factory=list)

    def series(self, key: str) -> np.ndarray:
        """A diagnostic over steps, shape ``[steps, B]``, NaN at steps that did not record it (Δ outside the
        guidance interval, where u is not evaluated)."""
        recorded = [np.asarray(row[key], dtype=np.float64) for row in self.trace if key in row]
        if not recorded:
            return np.zeros((len(self.trace), 0))
        missing = np.full_like(recorded[0], np.nan)
        return np.stack([np.asarray(row[key], dtype=np.float64) if key in row else missing for row in self.trace])


def initial_noise(
    shape: tuple[int, ...],
    generator: torch.Generator | list[torch.Generator] | None,
    device: torch.device,
    dtype: torch.dtype,
) -> Tensor:
    """Standard normal noise drawn on the generator's device (CPU by default), then moved."""
    return randn_tensor(shape, generator=generator, device=device, dtype=dtype)


def alpha_bar_at(scheduler, t: Tensor | float) -> Tensor:
    """ᾱ_t of the scheduler's training schedule; fractional t interpolates σ as diffusers' Euler does."""
    ac = getattr(scheduler, "alphas_cumprod", None)
    if ac is None:
        name = type(scheduler).__name__
        raise ValueError(f"{name} has no alphas_cumprod: only variance-preserving schedulers are supported")
    tf = float(t)
    if tf == int(tf):
        return ac[int(tf)].float()
    sigmas = ((1 - ac) / ac).sqrt().numpy()
    sigma = float(np.interp(tf, np.arange(len(sigmas)), sigmas))
    return torch.tensor(1.0 / (1.0 + sigma**2))


def alpha_bar_before(scheduler: DDIMScheduler, t: Tensor | int) -> Tensor:
    """ᾱ of the timestep a DDIM step from ``t`` lands on (``final_alpha_cumprod`` past the end), as DDIM computes it."""
    prev = int(t) - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    return (scheduler.alphas_cumprod[prev] if prev >= 0 else scheduler.final_alpha_cumprod).float()


def _accepts(fn, name: str) -> bool:
    return name in inspect.signature(fn).parameters


@torch.no_grad()
def sample(
    denoiser: Denoiser,
    scheduler,
    noise: Tensor,
    rule: GuidanceRule,
    *,
    num_steps: int,
    classifier: ClassifierGuidance | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
    eps_channels: int | None = None,
    diagnostics: bool = True,
    callback: Callable[[StepState], None] | None = None,
    step_kwargs: dict | None = None,
    preview: Callable[[Tensor], Tensor] | None = None,
) -> SampleResult:
    """Denoise ``noise`` (standard normal, unscaled) with ``scheduler`` and ``rule``.

    Rules, classifier gradients and diagnostics work on ε. A model that predicts v or x0 (the
    scheduler's ``prediction_type``) has both branches converted to ε in float32 first and the
    guided ε converted back for the scheduler; for ε-models nothing is converted.
    ``eps_channels``: when the model also predicts other channels (a learned variance),
    only the first ``eps_channels`` are guided; the rest come from the conditional branch.
    ``generator`` is handed to stochastic schedulers' ``step``. ``preview`` maps the predicted x0 to an
    RGB image in [−1, 1] (a latent decoder); saturation diagnostics are measured on that image, never on
    latents. Returns the final sample (in the model's space: latents or pixels) and a per-step trace.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    scheduler.set_timesteps(num_steps, device=noise.device)
    timesteps = scheduler.timesteps
    x = noise * scheduler.init_noise_sigma

    extra = dict(step_kwargs or {})
    if _accepts(scheduler.step, "generator"):
        extra.setdefault("generator", generator)
    if _accepts(scheduler.step, "eta"):
        extra.setdefault("eta", 0.0)

    # Scheduler-like objects without a diffusers config (test harnesses, wrappers) are taken to predict ε.
    prediction = getattr(getattr(scheduler, "config", None), "prediction_type", "epsilon")
    if rule.needs_ddim and not isinstance(scheduler, DDIMScheduler):
        raise ValueError(f"{rule.name} rewrites a DDIM step: use the ddim scheduler, not {type(scheduler).__name__}")
    state: dict = {}  # what stateful rules carry from step to step (APG's momentum), for this run only
    result = SampleResult(sample=x)
    n = len(timesteps)
    for i, t in enumerate(timesteps):
        x_in = scheduler.scale_model_input(x, t)
        branches = rule.branches_at(i, n)
        out = denoiser(torch.cat([x_in] * len(branches)) if len(branches) > 1 else x_in, t, ModelCall(branches, i, n))
        outs = dict(zip(branches, out.chunk(len(branches)), strict=True))
        k = eps_channels or out.shape[1]
        alpha_bar = alpha_bar_at(scheduler, t).to(x_in.device)
        eps_of = {b: to_eps(o[:, :k], x_in, alpha_bar, prediction) for b, o in outs.items()}
        rest = outs["cond"][:, k:]
        eps_cond, eps_uncond = eps_of["cond"], eps_of.get(rule.uncond_branch)

        step = GuideStep(i, n, alpha_bar, alpha_bar_before(scheduler, t) if rule.needs_ddim else None)
        eps = rule.apply(eps_uncond, eps_cond, x_t=x_in, alpha_bar=alpha_bar, step=step, state=state,
                         eps_perturbed=eps_of.get("perturbed"))

        log_p = grad = None
        if classifier is not None:
            ctx = ClassifierContext(alpha_bar, eps.detach(), i, n)
            grad, log_p = classifier_gradient(classifier.log_prob, x_in, t, ctx)
            if classifier.mode == "eps" and classifier.scale:
                eps = eps - ((1 - alpha_bar).sqrt() * classifier.scale * grad).to(eps.dtype)

        guided = from_eps(eps, x_in, alpha_bar, prediction).to(out.dtype)
        model_output = torch.cat([guided, rest], dim=1) if rest.shape[1] else guided
        x_prev = scheduler.step(model_output, t, x, **extra, return_dict=False)[0]
        if classifier is not None and classifier.mode == "mean" and classifier.scale:
            if classifier.variance is None:
                raise ValueError("mode='mean' classifier guidance needs a variance function")
            x_prev = x_prev + (classifier.scale * classifier.variance(t, model_output, x) * grad).to(x_prev.dtype)

        if diagnostics or callback is not None:
            pred_x0 = eps_to_x0(eps, x_in, alpha_bar)
            rgb = preview(pred_x0) if preview is not None else pred_x0
            diag = _diagnostics(eps_uncond, eps_cond, rgb, log_p, rule) if diagnostics else {}
            if diagnostics:
                result.trace.append({"step": i, "t": float(t), **{key: v.cpu().numpy() for key, v in diag.items()}})
            if callback is not None:
                callback(StepState(i, n, t, x, pred_x0, diag, rgb))
        x = x_prev

    result.sample = x
    return result


def classifier_gradient(log_prob: LogProb, x_t: Tensor, t: Tensor, ctx: ClassifierContext) -> tuple[Tensor, Tensor]:
    """∇ₓ Σ_b log p(y_b | x_t) and the per-sample log-probabilities, by autograd."""
    with torch.enable_grad():
        x = x_t.detach().clone().requires_grad_(True)
        lp = log_prob(x, t, ctx)
        (grad,) = torch.autograd.grad(lp.sum(), x)
    return grad.detach(), lp.detach()


def colour_saturation(rgb: Tensor) -> Tensor:
    """Mean HSV saturation per image ``[B]`` of RGB in [−1, 1]: S = (max − min) / max over the channels."""
    unit = (rgb.float().clamp(-1, 1) + 1) / 2
    high, low = unit.max(dim=1).values, unit.min(dim=1).values
    return torch.where(high > 0, (high - low) / high.clamp_min(1e-6), torch.zeros_like(high)).flatten(1).mean(dim=1)


def _diagnostics(
    eps_uncond: Tensor | None, eps_cond: Tensor, rgb: Tensor, log_p: Tensor | None, rule: GuidanceRule
) -> dict[str, Tensor]:
    diag: dict[str, Tensor] = {"x0_saturation": (rgb.float().abs() > 1).flatten(1).float().mean(dim=1)}
    if rgb.ndim == 4 and rgb.shape[1] == 3:
        diag["colour_saturation"] = colour_saturation(rgb)
    if eps_uncond is not None:
        par, perp = guidance_norms(eps_uncond, eps_cond, rule.basis)
        diag["delta_par"], diag["delta_perp"] = par, perp
    if log_p is not None:
        diag["log_prob"] = log_p.float()
    return diag
