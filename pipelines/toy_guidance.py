"""Classifier guidance in the toy profile: the toy UNet's null-prompt branch guided by a world classifier.

The text-conditioned toy UNet was trained with caption dropout, so with the empty prompt it is an
unconditional model of the whole shapes world. Guiding it with the noise-aware (colour, shape)
classifier is the paper's setting in miniature; ``compare_clean`` guides the same seed with the
classifier trained on clean images only, looking at the predicted x̂0.

Notebook use::

    from pipelines.toy_guidance import load_toy_guided
    from pipelines.classifier_guidance import classifier_guided_sample
    models = load_toy_guided(profile)
    result = classifier_guided_sample(models, class_id=models.class_names.index("red circle"),
                                      classifier_scale=10.0, steps="ddim25", seed=0, compare_clean=True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from guidance.rules import GuidanceRule
from guidance.sampler import ClassifierGuidance, SampleResult, sample
from models.adapters.adm_sampling import ADMClassifierLogProb
from models.adapters.denoisers import UNetDenoiser
from models.loading.sd import SDComponents, load_role_sd
from models.loading.toy_classifier import LabelledClassifier, load_labelled_classifier
from models.profiles import Profile
from models.runtime import Runtime, pick_runtime
from pipelines.schedulers import make_scheduler, step_kwargs_for
from pipelines.text_to_image import prompt_contexts

ROLES = ("sd", "classifier_noise_aware", "classifier_clean")


def ddpm_step_variance(scheduler) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """Σ_t of a diffusers ``DDPMScheduler`` step from t to its previous timestep (posterior variance β̃).

    β̃ = (1 − ᾱ_prev) / (1 − ᾱ_t) · (1 − ᾱ_t / ᾱ_prev), the "fixed_small" variance the scheduler samples with.
    """

    def variance(t: Tensor, model_output: Tensor, x_t: Tensor) -> Tensor:
        step = int(t)
        prev = int(scheduler.previous_timestep(step))
        abar = scheduler.alphas_cumprod[step]
        abar_prev = scheduler.alphas_cumprod[prev] if prev >= 0 else scheduler.one
        beta = 1 - abar / abar_prev
        return ((1 - abar_prev) / (1 - abar) * beta).clamp(min=1e-20).to(x_t.device, x_t.dtype)

    return variance


@dataclass
class ToySampling:
    """One configured toy run; diffusers schedulers hand the networks the original t, so the map is identity."""

    denoiser: UNetDenoiser
    scheduler: Any
    classifier: ClassifierGuidance
    num_steps: int
    step_kwargs: dict

    @property
    def timestep_map(self) -> Tensor:
        return torch.arange(self.scheduler.config.num_train_timesteps)

    def run(self, noise: Tensor, *, generator: torch.Generator | None = None, **kwargs: Any) -> SampleResult:
        return sample(self.denoiser, self.scheduler, noise, GuidanceRule("none"), steps=self.num_steps,
                      classifier=self.classifier, generator=generator, step_kwargs=self.step_kwargs,
                      **kwargs)  # fmt: skip


@dataclass
class ToyGuidedModels:
    """The :class:`~pipelines.classifier_guidance.GuidedModels` of the toy profile."""

    sd: SDComponents
    noise_aware: LabelledClassifier
    clean: LabelledClassifier
    clean_label: str = "clean world classifier"

    @property
    def classifier(self) -> nn.Module:
        return self.noise_aware.net

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.noise_aware.class_names

    @property
    def diffusion_module(self) -> nn.Module:
        return self.sd.unet

    @property
    def image_size(self) -> int:
        return int(self.sd.unet.config.sample_size)

    @property
    def sample_dtype(self) -> torch.dtype:
        """The UNet's dtype: noise is drawn in it (float16 on CUDA)."""
        return self.sd.dtype

    @property
    def diffusion_steps(self) -> int:
        return int(self.sd.scheduler_config["num_train_timesteps"])

    @property
    def diffusion_source(self) -> str:
        return self.sd.source

    @property
    def classifier_source(self) -> str:
        return self.noise_aware.source

    def describe(self) -> dict[str, Any]:
        return dict(image_size=self.image_size, class_cond=False, base_model="toy UNet, empty prompt",
                    sources={"sd": self.sd.source, "classifier_noise_aware": self.noise_aware.source,
                             "classifier_clean": self.clean.source})  # fmt: skip

    def clean_guide(self, x0: Tensor) -> Tensor:
        """The clean classifier's logits for images in [-1, 1] (it was trained at t = 0)."""
        device = next(self.clean.net.parameters()).device
        return self.clean.net(x0.to(device, torch.float32), torch.zeros(x0.shape[0], dtype=torch.long, device=device))

    def sampling_setup(self, y: Tensor, scale: float, respacing: str, use_ddim: bool) -> ToySampling:
        """DDIM (ε shifted by −√(1−ᾱ)·s·∇log p) or DDPM (mean shifted by s·β̃·∇log p) on the null-prompt branch.

        A diffusers scheduler spaces its steps evenly, so only a plain count ("25", "ddim25") is accepted.
        """
        body = respacing.removeprefix("ddim")
        if not body.isdigit():
            raise ValueError(f"the toy model's scheduler spaces steps evenly: give a single count such as "
                             f"\"25\" or \"ddim25\", not {respacing!r}")  # fmt: skip
        scheduler = make_scheduler("ddim" if use_ddim else "ddpm", self.sd.scheduler_config)
        null_states, _, _ = prompt_contexts(self.sd, "", "", len(y))  # the unconditional model is the only branch
        denoiser = UNetDenoiser(self.sd.unet, null_states)
        log_prob = ADMClassifierLogProb(self.classifier, y, timestep_map=torch.arange(self.diffusion_steps))
        if use_ddim:
            guidance = ClassifierGuidance(log_prob, float(scale), mode="eps")
        else:
            guidance = ClassifierGuidance(log_prob, float(scale), mode="mean", variance=ddpm_step_variance(scheduler))
        return ToySampling(denoiser, scheduler, guidance, int(body), step_kwargs_for(scheduler, self.sd.vae is None))


def load_toy_guided(profile: Profile, runtime: Runtime | None = None) -> ToyGuidedModels:
    """The profile's pixel-space UNet and its two world classifiers (each cached per process)."""
    runtime = runtime or pick_runtime()
    sd = load_role_sd(profile, runtime, "sd")
    aware = load_labelled_classifier(profile.source("classifier_noise_aware"), "classifier_noise_aware", runtime)
    clean = load_labelled_classifier(profile.source("classifier_clean"), "classifier_clean", runtime)
    if aware.class_names != clean.class_names:
        raise ValueError("classifier_noise_aware and classifier_clean must name the same classes in the same order")
    return ToyGuidedModels(sd, aware, clean)
