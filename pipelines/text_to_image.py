"""Text-to-image through the one sampler loop: Stable Diffusion 1.x layout, latent or pixel space.

Usable from a notebook without Gradio::

    sd = load_sd("stable-diffusion-v1-5/stable-diffusion-v1-5")  # or a local folder
    out = text_to_image(sd, "a red circle", rule=GuidanceRule("perp-cfg", 7.5), steps=25, seed=0)
    out = text_to_image(sd, "a red circle", rule=rule, settings=SamplingSettings(steps=25, seed=0))  # the same
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from torch import Tensor

from condition.text import encode_prompts
from guidance.rules import GuidanceRule, Rule, RunFacts
from guidance.sampler import SampleResult, initial_noise, sample
from guidance.settings import SamplingSettings, settings_from
from models.adapters.denoisers import UNetDenoiser
from models.loading.sd import SDComponents
from models.runtime import cpu_generator, row_budget
from pipelines.attention import AttentionStore, RowMarkingDenoiser, computing_attention, recording
from pipelines.schedulers import make_scheduler, step_kwargs_for

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel


@dataclass
class GenerationResult:
    images: Tensor  # [B, 3, H, W] in [0, 1], float32 on the CPU
    result: SampleResult
    truncated: list[str]
    attention: Tensor | None = None  # [B, h, w, tokens] mean cross-attention on the latent grid
    attention_kind: str | None = None  # "sdpa" or "materialised" when the run chose it; None: the UNet's own processors


def check_size(width: int, height: int, multiple: int = 8) -> None:
    for name, v in (("width", width), ("height", height)):
        if not isinstance(v, int) or v < multiple or v % multiple:
            raise ValueError(f"{name} must be a positive multiple of {multiple}, got {v!r}")


def to_pil(image: Tensor) -> Image.Image:
    """``[3, H, W]`` in [0, 1] to an 8-bit PIL image, rounded as diffusers' ``numpy_to_pil`` does."""
    array = (image.permute(1, 2, 0).float().numpy() * 255).round().astype("uint8")
    return Image.fromarray(array)


VAE_TILE_PIXELS = 768 * 768  # larger decodes go tile by tile: SD's VAE decoder peaks at several GB at 1024²


def decode(sd: SDComponents, x: Tensor) -> Tensor:
    """Model space to images in [0, 1] (VAE decode for latents, identity for pixels).

    Latents are decoded at most the row budget at a time (``models.runtime.rows_at_most``), and images larger
    than ``VAE_TILE_PIXELS`` with the VAE's tiling, so memory does not grow with the batch or the size.
    """
    if sd.vae is not None:
        latents = x / sd.vae.config.scaling_factor
        pixels = latents.shape[-2] * latents.shape[-1] * sd.vae_scale_factor**2
        step = row_budget() or latents.shape[0]
        tiled = pixels > VAE_TILE_PIXELS
        if tiled:
            sd.vae.enable_tiling()
        try:
            x = torch.cat([sd.vae.decode(latents[i:i + step], return_dict=False)[0]
                           for i in range(0, latents.shape[0], step)])
        finally:
            if tiled:
                sd.vae.disable_tiling()
    return (x.float() / 2 + 0.5).clamp(0, 1).cpu()


@torch.no_grad()
def text_to_image(
    sd: SDComponents,
    prompt: str,
    *,
    negative_prompt: str = "",
    rule: GuidanceRule,
    settings: SamplingSettings | None = None,
    generator: torch.Generator | None = None,
    cross_attention_kwargs: dict | None = None,
    attention: bool = False,
    weak: UNet2DConditionModel | None = None,
    attention_kind: str | None = None,
    class_labels: Tensor | None = None,
    **sampling: Any,
) -> GenerationResult:
    """Sample ``settings.num_images`` images for one prompt; CFG's unconditional branch is the negative prompt.

    ``settings`` (or its fields as keywords: ``steps=25, seed=0``) say how to sample. ``attention=True`` also
    records the conditional branch's cross-attention maps (:mod:`pipelines.attention`); otherwise the UNet runs
    with its own processors untouched. ``attention_kind`` ("sdpa" or "materialised") sets how every attention layer
    of the UNet (and of ``weak``) computes for this run only (:func:`pipelines.attention.computing_attention`).
    ``class_labels`` (one value per image) go to a UNet with a class embedding: a distilled student's scaled w.
    """
    settings = settings_from(settings, sampling)
    width, height = resolve_size(sd, settings.width, settings.height)
    cond, uncond, truncated = prompt_contexts(sd, prompt, negative_prompt, settings.num_images)
    shape = latent_shape(sd, width, height, settings.num_images)
    store = AttentionStore(settings.num_images, shape[2], shape[3]) if attention else None
    if store is not None:
        denoiser = RowMarkingDenoiser(store, sd.unet, cond, uncond, cross_attention_kwargs, class_labels=class_labels)
    else:
        denoiser = UNetDenoiser(sd.unet, cond, uncond, cross_attention_kwargs, class_labels=class_labels)
    # Outermost the kind, then the recorder around it (PAG's perturbed layers go around each call inside): each
    # wraps what the previous one installed, and each restores it on the way out, errors included.
    with ExitStack() as installed:
        if attention_kind is not None:
            for unet in filter(None, (sd.unet, weak)):
                installed.enter_context(computing_attention(unet, attention_kind))
        if store is not None:
            installed.enter_context(recording(sd.unet, store))
        images, result = generate(sd, denoiser, rule, shape, settings, generator=generator, weak=weak)
    maps = store.maps() if store is not None else None
    return GenerationResult(images, result, truncated, maps, attention_kind)


def resolve_size(sd: SDComponents, width: int | None, height: int | None) -> tuple[int, int]:
    """Missing sizes default to the model's native size; sizes must fit the latent grid."""
    size = sd.unet.config.sample_size * sd.vae_scale_factor
    width, height = width or size, height or size
    check_size(width, height, 8 if sd.vae is not None else 1)
    return width, height


def latent_shape(sd: SDComponents, width: int, height: int, num_images: int) -> tuple[int, int, int, int]:
    return (num_images, sd.unet.config.in_channels, height // sd.vae_scale_factor, width // sd.vae_scale_factor)


def prompt_contexts(
    sd: SDComponents, prompt: str, negative_prompt: str, num_images: int
) -> tuple[Tensor, Tensor, list[str]]:
    """Conditional and unconditional (negative-prompt) text states, one row per image, and the truncation note."""
    text = encode_prompts(sd.tokenizer, sd.text_encoder, [prompt, negative_prompt], sd.device)
    return text.states[:1].repeat(num_images, 1, 1), text.states[1:].repeat(num_images, 1, 1), text.truncated[:1]


def generate(
    sd: SDComponents,
    denoiser,
    rule: Rule,
    shape: tuple[int, ...],
    settings: SamplingSettings,
    *,
    generator: torch.Generator | list[torch.Generator] | None = None,
    weak: UNet2DConditionModel | None = None,
) -> tuple[Tensor, SampleResult]:
    """Noise from the seed, the one sampler loop with a fresh scheduler, then decoding: shared by every SD tab.

    ``weak`` is autoguidance's weaker model. The rule is checked against the run first (its scheduler, the model's
    space), and what its modifiers ask of the scheduler (dynamic thresholding) goes into the fresh scheduler.
    """
    pixel_space = sd.vae is None
    rule.check(RunFacts(settings.scheduler, pixel_space, settings.ddim_eta))
    sched = make_scheduler(settings.scheduler, sd.scheduler_config, **rule.scheduler_options())
    generator = generator or cpu_generator(settings.seed)
    noise = initial_noise(shape, generator, sd.device, sd.dtype)
    denoiser.weak = weak
    result = sample(denoiser, sched, noise, rule, settings, generator=generator,
                    step_kwargs=step_kwargs_for(sched, pixel_space=pixel_space))
    return decode(sd, result.sample), result
