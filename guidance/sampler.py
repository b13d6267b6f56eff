"""The one denoising loop that every tab drives.

Read it top to bottom: draw noise, then for each timestep scale the input, evaluate
every branch the rule asks for in one batched model call (:func:`predict`), guide
(:meth:`Rule.guide_step`), optionally add a classifier gradient (:func:`classifier_push`), let the diffusers
scheduler take the step. Models are passed in as *denoisers*: callables that take the
branch-stacked input and return the model output for every row (see :class:`Denoiser`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import torch
from diffusers import DDIMScheduler
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor

from guidance.methods.base import GuideStep
from guidance.methods.perp_cfg import guidance_norms
from guidance.parameterization import NoiseLevel, from_guided, to_guided
from guidance.rules import Rule
from guidance.settings import SamplingSettings, settings_from


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
    options: Mapping[str, Any] = field(default_factory=dict)  # per extra branch, what its model hook reads (PAG)

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
    rule: Rule,
    settings: SamplingSettings | None = None,
    *,
    classifier: ClassifierGuidance | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
    eps_channels: int | None = None,
    step_kwargs: dict | None = None,
    **sampling: Any,
) -> SampleResult:
    """Denoise ``noise`` (standard normal, unscaled) with ``scheduler`` and ``rule``.

    ``settings`` (or its fields as keywords, e.g. ``steps=25``) give the number of steps, DDIM's η and the run's
    hooks. Rules, classifier gradients and diagnostics work on ε: a model that predicts v or x0 (the scheduler's
    ``prediction_type``) has its branches converted to ε in float32 and the guided ε converted back.
    ``eps_channels``: when the model also predicts other channels (a learned variance), only the first
    ``eps_channels`` are guided; the rest come from the conditional branch. ``generator`` is handed to stochastic
    schedulers' ``step``. Returns the final sample (latents or pixels) and a per-step trace.
    """
    settings = settings_from(settings, sampling)
    if settings.steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {settings.steps}")
    if rule.needs_ddim and not isinstance(scheduler, DDIMScheduler):
        raise ValueError(f"{rule.name} rewrites a DDIM step: use the ddim scheduler, not {type(scheduler).__name__}")
    set_timesteps(scheduler, settings.steps, noise)
    x = noise * getattr(scheduler, "init_noise_sigma", 1.0)  # flow schedulers start from the noise itself
    step_options = scheduler_step_options(scheduler, settings, generator, step_kwargs)
    prediction = prediction_type_of(scheduler)
    state: dict = {}  # what stateful rules carry from step to step (APG's momentum), for this run only
    result = SampleResult(sample=x)
    n = len(scheduler.timesteps)
    for i, t in enumerate(scheduler.timesteps):
        x_in = scheduler.scale_model_input(x, t) if hasattr(scheduler, "scale_model_input") else x
        level = noise_level(scheduler, t, i)
        call = ModelCall(rule.branches_at(i, n), i, n, rule.branch_options())
        guided_of, rest = predict(denoiser, x_in, t, call, level, prediction, eps_channels)
        step = GuideStep(i, n, level.alpha_bar, alpha_bar_before(scheduler, t) if rule.needs_ddim else None)
        guided = rule.guide_step(guided_of, x_in, level, step, state)
        guided, log_p, grad = classifier_push(classifier, guided, x_in, t, level, step)
        x_prev = denoising_step(scheduler, guided, rest, x_in, x, t, level, prediction, step_options, classifier,
                                grad)
        record(result, settings, rule, guided_of, guided, x_in, level, log_p, (i, n, t, x))
        x = x_prev
    result.sample = x
    return result


def scheduler_step_options(scheduler, settings: SamplingSettings, generator, step_kwargs: dict | None) -> dict:
    """Keyword arguments for every ``scheduler.step``: the caller's, DDIM's η, and the generator of a stochastic
    scheduler (DDIM with η > 0, DDPM, Euler ancestral)."""
    options = dict(step_kwargs or {})
    if _accepts(scheduler.step, "generator"):
        options.setdefault("generator", generator)
    if _accepts(scheduler.step, "eta"):
        options.setdefault("eta", settings.ddim_eta)
    return options


def prediction_type_of(scheduler) -> str:
    """What the model predicts, as its scheduler says: a flow-matching scheduler's model predicts the velocity;
    scheduler-like objects without a diffusers config (test harnesses, wrappers) are taken to predict ε."""
    if is_flow_scheduler(scheduler):
        return "flow"
    return getattr(getattr(scheduler, "config", None), "prediction_type", "epsilon")


def is_flow_scheduler(scheduler) -> bool:
    """A rectified-flow schedule (σ from 1 to 0, x_t = (1 − σ) x0 + σ ε): diffusers' flow-matching schedulers."""
    return hasattr(scheduler, "sigmas") and not hasattr(scheduler, "alphas_cumprod") and \
        type(scheduler).__name__.startswith("FlowMatch")


def set_timesteps(scheduler, steps: int, noise: Tensor) -> None:
    """The scheduler's timesteps for ``steps``; a flow schedule with dynamic shifting gets the shift for the number
    of image tokens as diffusers' flow pipelines compute it (SD3's ``calculate_shift``)."""
    config = getattr(scheduler, "config", None)
    if is_flow_scheduler(scheduler) and getattr(config, "use_dynamic_shifting", False):
        tokens = noise.shape[-1] * noise.shape[-2] // 4  # 2 × 2 patches of the latent, as SD3 and Flux patchify
        slope = (config.max_shift - config.base_shift) / (config.max_image_seq_len - config.base_image_seq_len)
        mu = tokens * slope + config.base_shift - slope * config.base_image_seq_len
        scheduler.set_timesteps(steps, device=noise.device, mu=mu)
    else:
        scheduler.set_timesteps(steps, device=noise.device)


def noise_level(scheduler, t: Tensor, index: int) -> NoiseLevel:
    """x_t's mix of data and noise at step ``index`` (timestep ``t``): ᾱ_t on a variance-preserving schedule, σ on a
    flow (the scheduler's own σ of that step, shift included)."""
    if is_flow_scheduler(scheduler):
        return NoiseLevel.rectified_flow(scheduler.sigmas[index])
    return NoiseLevel.vp(alpha_bar_at(scheduler, t))


def predict(denoiser: Denoiser, x_in: Tensor, t: Tensor, call: ModelCall, level: NoiseLevel, prediction: str,
            eps_channels: int | None) -> tuple[dict[str, Tensor], Tensor]:
    """Every branch the rule asks for in one batched model call, by branch name as the prediction the rules guide
    (ε, or a flow's velocity), and the conditional branch's channels beyond ``eps_channels`` (a learned variance)."""
    branches = call.branches
    out = denoiser(torch.cat([x_in] * len(branches)) if len(branches) > 1 else x_in, t, call)
    outs = dict(zip(branches, out.chunk(len(branches)), strict=True))
    k = eps_channels or out.shape[1]
    return {b: to_guided(o[:, :k], x_in, level, prediction) for b, o in outs.items()}, outs["cond"][:, k:]


def classifier_push(classifier: ClassifierGuidance | None, eps: Tensor, x_in: Tensor, t: Tensor, level: NoiseLevel,
                    step: GuideStep) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Classifier guidance on top of the rule (ε form: ε ← ε − √(1−ᾱ) s ∇ log p(y | x_t)); returns the ε, the
    per-sample log p and the gradient (the mean form adds it after the scheduler's step)."""
    if classifier is None:
        return eps, None, None
    if level.flow:
        raise ValueError("classifier guidance here is written for variance-preserving schedules, not flows")
    alpha_bar = level.alpha_bar.to(x_in.device)
    ctx = ClassifierContext(alpha_bar, eps.detach(), step.index, step.num_steps)
    grad, log_p = classifier_gradient(classifier.log_prob, x_in, t, ctx)
    if classifier.mode == "eps" and classifier.scale:
        eps = eps - ((1 - alpha_bar).sqrt() * classifier.scale * grad).to(eps.dtype)
    return eps, log_p, grad


def denoising_step(scheduler, guided: Tensor, rest: Tensor, x_in: Tensor, x: Tensor, t: Tensor, level: NoiseLevel,
                   prediction: str, step_options: dict, classifier: ClassifierGuidance | None,
                   grad: Tensor | None) -> Tensor:
    """The scheduler's step on the guided prediction (back in the model's own parameterisation)."""
    guided = from_guided(guided, x_in, level, prediction).to(rest.dtype)  # the model output's dtype (rest: maybe [])
    model_output = torch.cat([guided, rest], dim=1) if rest.shape[1] else guided
    x_prev = scheduler.step(model_output, t, x, **step_options, return_dict=False)[0]
    if classifier is not None and classifier.mode == "mean" and classifier.scale:
        if classifier.variance is None:
            raise ValueError("mode='mean' classifier guidance needs a variance function")
        x_prev = x_prev + (classifier.scale * classifier.variance(t, model_output, x) * grad).to(x_prev.dtype)
    return x_prev


def record(result: SampleResult, settings: SamplingSettings, rule: Rule, eps_of: dict[str, Tensor], eps: Tensor,
           x_in: Tensor, level: NoiseLevel, log_p: Tensor | None, where: tuple[int, int, Tensor, Tensor]) -> None:
    """The step's diagnostics into the trace, and the callback (with the x̂0 preview) when someone watches;
    ``where`` is (step index, number of steps, t, x_t)."""
    if not settings.diagnostics and settings.callback is None:
        return
    index, num_steps, t, x = where
    pred_x0 = level.x0(eps, x_in)
    rgb = settings.preview(pred_x0) if settings.preview is not None else pred_x0
    u = eps_of.get(rule.uncond_branch)
    diag = _diagnostics(u, eps_of["cond"], rgb, log_p, rule) if settings.diagnostics else {}
    if settings.diagnostics:
        result.trace.append({"step": index, "t": float(t), **{key: v.cpu().numpy() for key, v in diag.items()}})
    if settings.callback is not None:
        settings.callback(StepState(index, num_steps, t, x, pred_x0, diag, rgb))


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
    eps_uncond: Tensor | None, eps_cond: Tensor, rgb: Tensor, log_p: Tensor | None, rule: Rule
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
