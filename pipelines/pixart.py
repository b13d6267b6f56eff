"""PixArt-Σ text-to-image through the one sampler loop.

PixArt-Σ (Chen et al. 2024) is a DiT over SDXL-VAE latents whose blocks cross-attend to 300 T5 tokens and take the
timestep through AdaLN-single (PixArt-α, Chen et al. 2023). Classifier-free guidance (Ho & Salimans 2022) contrasts
the prompt's prediction with the negative prompt's, ε̃ = ε(x, ∅) + w · (ε(x, c) − ε(x, ∅)); every rule of the registry
that needs only those two predictions applies. Notebook use::

    from models.loading.pixart import load_pixart
    pixart = load_pixart("PixArt-alpha/PixArt-Sigma-XL-2-512-MS", "PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers")
    out = pixart_to_image(pixart, "a red circle", rule=GuidanceRule("cfg", 4.5), steps=20, seed=0)
    out.images                       # [N, 3, H, W] in [0, 1]

With ``rule=GuidanceRule("cfg", w)``, w > 1 and ``scheduler="own"`` (the default: the repo's DPM-Solver++) this is
``PixArtSigmaPipeline(prompt, negative_prompt=…, guidance_scale=w, num_inference_steps=n, height=H, width=W,
generator=torch.Generator().manual_seed(seed), clean_caption=False, use_resolution_binning=False)``
(tests/test_pixart_parity.py compares the two). Sizes are used as given (no aspect-ratio binning). The learned
variance channels are dropped before guidance, as the pipeline drops them, except for the DDPM scheduler, which then
samples with the learned variance (``variance_type="learned_range"``) as PixArt's own IDDPM sampler does.
"""

from __future__ import annotations

from typing import Any

import torch

from condition.pixart_text import encode_t5_prompts
from guidance.rules import Rule, RunFacts
from guidance.sampler import initial_noise, sample
from guidance.settings import SamplingSettings, settings_from
from models.adapters.pixart_denoiser import PixArtDenoiser, refuse_branches
from models.loading.pixart import PixArtComponents
from models.runtime import cpu_generator
from pipelines.schedulers import SCHEDULERS, make_scheduler
from pipelines.text_to_image import GenerationResult, check_size, decode

OWN = "own"  # the scheduler the repo's scheduler_config.json names (PixArt-Σ: DPM-Solver++, order 2)
SCHEDULER_CHOICES = (OWN, *SCHEDULERS)


def own_scheduler(config: dict) -> str:
    """The registry name whose scheduler equals the repo's: same class, and the registry's fixed options already in
    the config (PixArt-Σ's DPMSolverMultistepScheduler with dpmsolver++ of order 2 is ``dpm++2m``)."""
    for name, (cls, overrides) in SCHEDULERS.items():
        if config.get("_class_name") == cls.__name__ and all(config.get(k) == v for k, v in overrides.items()):
            return name
    raise ValueError(f"the repo's scheduler ({config.get('_class_name')}) is none of the registry's; choose one of "
                     f"{', '.join(SCHEDULERS)}")


def resolve_scheduler(components: PixArtComponents, name: str) -> str:
    if name == OWN:
        return own_scheduler(components.scheduler_config)
    if name not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {', '.join(SCHEDULER_CHOICES)}; got {str(name)[:40]!r}")
    return name


def resolve_size(components: PixArtComponents, width: int | None, height: int | None) -> tuple[int, int]:
    """Missing sizes default to the native resolution (``sample_size`` × the VAE factor: 512 for 512-MS); sizes must
    give a latent grid the transformer's 2 × 2 patches tile."""
    native = components.image_size
    width, height = width or native, height or native
    check_size(width, height, components.vae_scale_factor * components.patch_size)
    return width, height


def rule_branches(rule: Rule, steps: int) -> set[str]:
    """Every branch the rule asks for at some step of a ``steps``-step run."""
    return {branch for i in range(max(int(steps), 0)) for branch in rule.branches_at(i, steps)}


@torch.no_grad()
def pixart_to_image(
    components: PixArtComponents,
    prompt: str,
    *,
    negative_prompt: str = "",
    rule: Rule,
    settings: SamplingSettings | None = None,
    generator: torch.Generator | None = None,
    **sampling: Any,
) -> GenerationResult:
    """``settings.num_images`` images for one prompt; the unconditional branch is the negative prompt (default "").

    ``settings`` (or its fields as keywords: ``steps=20, seed=0``) say how to sample, the scheduler ``own`` by
    default. The rule is checked against the run before any model work; autoguidance and PAG are refused (their
    extra branches need a second model or attention hooks this model does not have here).
    """
    settings = settings_from(settings, {"scheduler": OWN, **sampling} if settings is None else sampling)
    for name, text in (("prompt", prompt), ("negative_prompt", negative_prompt)):
        if not isinstance(text, str):
            raise ValueError(f"{name} must be a string, got {type(text).__name__}")
    num_images = settings.num_images
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"num_images must be a positive whole number, got {num_images!r}")
    name = resolve_scheduler(components, settings.scheduler)
    rule.check(RunFacts(name, False, settings.ddim_eta))
    refuse_branches(rule_branches(rule, settings.steps))
    width, height = resolve_size(components, settings.width, settings.height)

    text = encode_t5_prompts(components.tokenizer, components.text_encoder, [prompt, negative_prompt],
                             components.device)
    states = text.states.to(components.dtype)
    cond, uncond = states[:1].repeat(num_images, 1, 1), states[1:].repeat(num_images, 1, 1)
    cond_mask, uncond_mask = text.mask[:1].repeat(num_images, 1), text.mask[1:].repeat(num_images, 1)

    # DDPM can use the learned variance (the model's extra channels); the other schedulers take ε alone.
    keep_variance = name == "ddpm" and components.learned_sigma
    options = rule.scheduler_options()
    if keep_variance:
        options["variance_type"] = "learned_range"
    scheduler = make_scheduler(name, components.scheduler_config, **options)
    channels = components.latent_channels
    denoiser = PixArtDenoiser(components.transformer, cond, cond_mask, uncond, uncond_mask,
                              channels=None if keep_variance else channels)
    generator = generator or cpu_generator(settings.seed)
    factor = components.vae_scale_factor
    noise = initial_noise((num_images, channels, height // factor, width // factor), generator, components.device,
                          components.dtype)
    # Latents: no x̂0 clipping to step around (step_kwargs_for's pixel-space DDIM case), so no step options.
    result = sample(denoiser, scheduler, noise, rule, settings, generator=generator,
                    eps_channels=channels if keep_variance else None)
    return GenerationResult(decode(components, result.sample), result, text.truncated[:1])
