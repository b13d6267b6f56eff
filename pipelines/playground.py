"""The 2D guidance playground: exact scores of a Gaussian mixture through the one sampler loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler, DDPMScheduler

from guidance.rules import RULE_NAMES, GuidanceRule
from guidance.sampler import ClassifierGuidance, Denoiser, SampleResult, StepState, initial_noise, sample
from models.architectures.gmm2d import GaussianMixture2D, GMMDenoiser, default_mixture, degraded, exact_classifier
from models.architectures.guided_student_2d import GuidedStudentDenoiser, load_student
from models.runtime import cpu_generator

GUIDANCE_MODES = (*RULE_NAMES, "classifier")
SAMPLERS = ("ddpm", "ddim")


@dataclass
class PlaygroundRun:
    samples: torch.Tensor  # [N, 2]
    result: SampleResult
    mixture: GaussianMixture2D
    label: int
    stats: dict


def make_scheduler(sampler: str):
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}; got {sampler!r}")
    common = dict(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False)
    return DDPMScheduler(**common) if sampler == "ddpm" else DDIMScheduler(**common, set_alpha_to_one=True)


MAX_STEPS = 1000
MAX_SAMPLES = 20_000


def run_playground(
    guidance: str = "cfg",
    scale: float = 3.0,
    *,
    target_class: str = "red",
    sampler: str = "ddpm",
    steps: int = 200,
    num_samples: int = 1000,
    seed: int = 0,
    mixture: GaussianMixture2D | None = None,
    callback: Callable[[StepState], None] | None = None,
    denoiser: Denoiser | None = None,
    **options,
) -> PlaygroundRun:
    """Sample the mixture with a registry rule (``options``: its parameters, e.g. ``eta``, ``basis``) or with
    ``"classifier"``: the unconditional model plus the exact ∇ log p_t(c | x), scaled by ``scale``.

    ``denoiser`` replaces the exact ε by another model of the same world with the same interface (the learned
    networks of ``experiments.puncond``): same loop, scheduler, noise and statistics, so runs compare sample by sample.
    """
    if guidance not in GUIDANCE_MODES:
        raise ValueError(f"guidance must be one of {GUIDANCE_MODES}; got {guidance!r}")
    if not 1 <= int(steps) <= MAX_STEPS:
        raise ValueError(f"steps must be between 1 and {MAX_STEPS}; got {steps!r}")
    if not 1 <= int(num_samples) <= MAX_SAMPLES:
        raise ValueError(f"num_samples must be between 1 and {MAX_SAMPLES}; got {num_samples!r}")
    mixture = mixture or default_mixture()
    label = mixture.class_index(target_class)
    scheduler = make_scheduler(sampler)
    alpha_bars = scheduler.alphas_cumprod.double()

    if guidance == "classifier":
        if denoiser is not None:
            raise ValueError("classifier guidance here uses the exact unconditional score; a learned denoiser "
                             "takes a rule of the registry")
        rule = GuidanceRule("none", 1.0)
        classifier = ClassifierGuidance(exact_classifier(mixture, label, alpha_bars), scale=float(scale))
        # The classifier steers the *unconditional* model: p(x) p(c|x)^s.
        denoiser_call = _unconditional(GMMDenoiser(mixture, label, alpha_bars))
    elif guidance == "distilled":
        if denoiser is not None:
            raise ValueError("the distilled student is its own denoiser; a learned denoiser takes a rule of the "
                             "registry")
        # One call per step of the shipped 2D student at w (Meng et al. 2023): the loop takes its output as it is.
        rule, classifier = GuidanceRule("none", 1.0), None
        denoiser_call = GuidedStudentDenoiser(load_student(), label, float(scale))
    else:
        rule = GuidanceRule(guidance, float(scale), **options)
        needing = [m for m in rule.modifiers if any(p.needs for p in m.params)]
        if needing:
            names = " and ".join(m.label or m.name for m in needing)
            raise ValueError(f"the 2D playground has exact scores, no attention layers or pixels: {names} "
                             f"{'do' if len(needing) > 1 else 'does'} not apply here (switch "
                             f"{' and '.join(m.params[0].name for m in needing)} off)")
        classifier = None
        weak = degraded(mixture) if rule.uncond_branch == "weak" else None  # autoguidance's "bad version"
        denoiser_call = denoiser if denoiser is not None else GMMDenoiser(mixture, label, alpha_bars, weak=weak)

    generator = cpu_generator(seed)
    noise = initial_noise((int(num_samples), 2), generator, torch.device("cpu"), torch.float64)
    result = sample(denoiser_call, scheduler, noise, rule, steps=int(steps), classifier=classifier,
                    generator=generator, callback=callback)
    samples = result.sample
    return PlaygroundRun(samples, result, mixture, label, sample_stats(samples, mixture, label))


def _unconditional(denoiser: GMMDenoiser):
    def call(x, t, model_call):
        return denoiser.mixture.eps(x, denoiser.alpha_bars[int(t)], None)

    return call


def sample_stats(samples: torch.Tensor, mixture: GaussianMixture2D, label: int) -> dict:
    """Share of samples in class c's components, and diversity.

    ``mode_spread`` is the RMS distance of samples to the centroid of the mixture component
    they fall in (how wide each mode is sampled); ``global_spread`` the RMS distance to the
    overall mean (guidance can push modes apart while narrowing each of them).
    """
    comp = mixture.nearest_component(samples)
    in_class = (mixture.labels[comp] == label).double().mean().item()
    sq = torch.zeros(samples.shape[0], dtype=samples.dtype)
    for k in comp.unique():
        idx = comp == k
        sq[idx] = (samples[idx] - samples[idx].mean(0)).pow(2).sum(1)
    return {
        "class_fraction": round(in_class, 4),
        "mode_spread": round(sq.mean().sqrt().item(), 4),
        "global_spread": round((samples - samples.mean(0)).pow(2).sum(1).mean().sqrt().item(), 4),
        "n": int(samples.shape[0]),
    }


def energy_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Székely's two-sample energy distance 2E|A−B| − E|A−A'| − E|B−B'| (V-statistic)."""
    return float(2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean())


