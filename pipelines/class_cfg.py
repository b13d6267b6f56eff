"""Class-conditional sampling with classifier-free guidance on a DiT (AdaLN-zero), through the one sampler loop.

The conditional branch gets the class label, the unconditional branch the null label the model was trained with
under label dropout (Ho & Salimans 2022); every rule of the registry that needs only those two predictions applies.
Notebook use::

    from models.loading.dit import load_dit
    dit = load_dit(load_profile("toy"))
    out = class_cfg_sample(dit, class_id=3, rule=GuidanceRule("cfg", 4.0), steps=25, seed=0)
    out.images                       # [N, 3, H, W] in [0, 1]

With ``rule=GuidanceRule("cfg", w)``, ``scheduler="own"`` and w > 1 this is ``DiTPipeline(class_labels=[k],
guidance_scale=w, num_inference_steps=n, generator=torch.manual_seed(seed))`` (tests/test_class_cfg.py compares
the two). A learned-variance DiT (DiT-XL/2 predicts ε and a variance per channel) keeps its variance channels for
the DDPM scheduler, which then uses the learned variance as ADM does; the other schedulers take ε alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from guidance.rules import GuidanceRule, RunFacts
from guidance.sampler import ClassifierGuidance, SampleResult, initial_noise, sample
from guidance.settings import SamplingSettings, settings_from
from models.adapters.denoisers import DiTDenoiser
from models.loading.dit import DiTComponents
from models.runtime import cpu_generator
from pipelines.schedulers import SCHEDULERS, make_scheduler, step_kwargs_for
from pipelines.text_to_image import decode

OWN = "own"  # the scheduler named in the model's scheduler_config.json
SCHEDULER_CHOICES = (OWN, *SCHEDULERS)
CLIP_MODES = ("off", "clipped-eps", "unclipped-eps")
CLIP_HELP = ("off: no x̂0 clipping (the toy DiT's shipped scheduler) · clipped-eps: DDIM clips x̂0 and steps with the "
             "ε of the clipped x̂0 · unclipped-eps: clips x̂0 but keeps the model's ε, the trap of a DDIM built from a "
             "DDPM config (clip_sample=True): the step leaves the data manifold")
_CLASS_TO_NAME = {cls.__name__: name for name, (cls, overrides) in SCHEDULERS.items() if not overrides}


@dataclass
class ClassCFGResult:
    images: Tensor  # [N, 3, H, W] in [0, 1], float32 on the CPU
    result: SampleResult
    scheduler: str  # the scheduler that ran (``own`` resolved)
    seconds: float


def own_scheduler(config: dict) -> str:
    """The registry name of the model's own scheduler class (DDIM for DiT-XL-2-256); ddim when unknown."""
    return _CLASS_TO_NAME.get(str(config.get("_class_name")), "ddim")


def check_clip_mode(clip_sample: str, scheduler: str) -> None:
    if clip_sample not in CLIP_MODES:
        raise ValueError(f"clip_sample must be one of {', '.join(CLIP_MODES)}; got {str(clip_sample)[:40]!r}")
    if clip_sample != "off" and scheduler != "ddim":
        raise ValueError(f"clip_sample = {clip_sample} shows a DDIM step's clipping: set scheduler to ddim "
                         f"(got {scheduler})")


def build_scheduler(dit: DiTComponents, name: str, rule: GuidanceRule, clip_sample: str = "off",
                    ddim_eta: float = 0.0):
    """A fresh scheduler by name (``own``: the model's), with the learned variance for DDPM on a learned-sigma DiT,
    the rule's dynamic thresholding, and the clip_sample mode; returns it with its ``step`` keyword arguments."""
    name = own_scheduler(dit.scheduler_config) if name == OWN else name
    check_clip_mode(clip_sample, name)
    pixel_space = dit.vae is None
    rule.check(RunFacts(name, pixel_space, ddim_eta))
    options = rule.scheduler_options()
    if name == "ddpm" and dit.learned_sigma:
        options["variance_type"] = "learned_range"
    if clip_sample != "off":
        options.update(clip_sample=True, clip_sample_range=1.0)
    scheduler = make_scheduler(name, dit.scheduler_config, **options)
    step_kwargs = step_kwargs_for(scheduler, pixel_space)
    if clip_sample == "unclipped-eps":
        step_kwargs = {"use_clipped_model_output": False}
    elif clip_sample == "clipped-eps":
        step_kwargs = {"use_clipped_model_output": True}
    return name, scheduler, step_kwargs


@torch.no_grad()
def class_cfg_sample(
    dit: DiTComponents,
    *,
    class_id: int,
    rule: GuidanceRule,
    settings: SamplingSettings | None = None,
    clip_sample: str = "off",
    generator: torch.Generator | None = None,
    classifier: ClassifierGuidance | None = None,
    **sampling: Any,
) -> ClassCFGResult:
    """``settings.num_images`` samples of ``class_id``, the unconditional branch on the null class; ``settings`` (or
    its fields as keywords) say how, its scheduler ``own`` by default (the model's). ``classifier`` only records
    (scale 0) or adds a classifier gradient on top, as in the classifier-guidance tab."""
    settings = settings_from(settings, {"scheduler": OWN, **sampling} if settings is None else sampling)
    if not 0 <= int(class_id) < dit.num_classes:
        raise ValueError(f"class_id must be between 0 and {dit.num_classes - 1} for this DiT, got {class_id!r}")
    name, sched, step_kwargs = build_scheduler(dit, settings.scheduler, rule, clip_sample, settings.ddim_eta)
    keep_variance = name == "ddpm" and dit.learned_sigma
    denoiser = DiTDenoiser(dit.transformer, torch.full((settings.num_images,), int(class_id)), dit.null_class,
                           channels=None if keep_variance else dit.latent_channels)
    size = int(dit.transformer.config.sample_size)
    generator = generator or cpu_generator(settings.seed)
    noise = initial_noise((settings.num_images, dit.latent_channels, size, size), generator, dit.device, dit.dtype)
    start = time.perf_counter()
    result = sample(denoiser, sched, noise, rule, settings, generator=generator, step_kwargs=step_kwargs,
                    eps_channels=dit.latent_channels if keep_variance else None, classifier=classifier)
    images = decode(dit, result.sample)
    return ClassCFGResult(images, result, name, time.perf_counter() - start)


def decode_to_unit(dit: DiTComponents, x: Tensor) -> Tensor:
    """Model space (latents or pixels) to images in [0, 1], kept on the model's device."""
    if dit.vae is not None:
        x = dit.vae.decode(x / dit.vae.config.scaling_factor, return_dict=False)[0]
    return (x.float() / 2 + 0.5).clamp(0, 1)
