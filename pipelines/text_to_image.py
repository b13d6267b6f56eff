"""Text-to-image through the one sampler loop: Stable Diffusion 1.x layout, latent or pixel space.

Usable from a notebook without Gradio::

    sd = load_sd("stable-diffusion-v1-5/stable-diffusion-v1-5")  # or a local folder
    out = text_to_image(sd, "a red circle", rule=GuidanceRule("perp-cfg", 7.5), steps=25, seed=0)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from condition.text import encode_prompts
from guidance.rules import GuidanceRule
from guidance.sampler import SampleResult, StepState, initial_noise, sample
from models.denoisers import UNetDenoiser
from models.runtime import cpu_generator
from pipelines.schedulers import make_scheduler, step_kwargs_for


@dataclass
class SDComponents:
    """The parts of a Stable-Diffusion-1.x-style model; ``vae=None`` means pixel space."""

    unet: object
    text_encoder: object
    tokenizer: object
    scheduler_config: dict
    vae: object | None = None
    source: str = ""
    extras: dict = field(default_factory=dict)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1) if self.vae is not None else 1

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype


@dataclass
class GenerationResult:
    images: Tensor  # [B, 3, H, W] in [0, 1], float32 on the CPU
    result: SampleResult
    truncated: list[str]


def check_size(width: int, height: int, multiple: int = 8) -> None:
    for name, v in (("width", width), ("height", height)):
        if not isinstance(v, int) or v < multiple or v % multiple:
            raise ValueError(f"{name} must be a positive multiple of {multiple}, got {v!r}")


def decode(sd: SDComponents, x: Tensor) -> Tensor:
    """Model space to images in [0, 1] (VAE decode for latents, identity for pixels)."""
    if sd.vae is not None:
        x = sd.vae.decode(x / sd.vae.config.scaling_factor, return_dict=False)[0]
    return (x.float() / 2 + 0.5).clamp(0, 1).cpu()


@torch.no_grad()
def text_to_image(
    sd: SDComponents,
    prompt: str,
    *,
    negative_prompt: str = "",
    rule: GuidanceRule,
    steps: int = 25,
    width: int | None = None,
    height: int | None = None,
    seed: int = 0,
    num_images: int = 1,
    scheduler: str = "ddim",
    generator: torch.Generator | None = None,
    callback: Callable[[StepState], None] | None = None,
    cross_attention_kwargs: dict | None = None,
) -> GenerationResult:
    """Sample ``num_images`` images for one prompt; CFG's unconditional branch is the negative prompt."""
    size = sd.unet.config.sample_size * sd.vae_scale_factor
    width, height = width or size, height or size
    check_size(width, height, 8 if sd.vae is not None else 1)
    text = encode_prompts(sd.tokenizer, sd.text_encoder, [prompt, negative_prompt], sd.device)
    cond = text.states[:1].repeat(num_images, 1, 1)
    uncond = text.states[1:].repeat(num_images, 1, 1)
    denoiser = UNetDenoiser(sd.unet, cond, uncond, cross_attention_kwargs)
    sched = make_scheduler(scheduler, sd.scheduler_config)
    shape = (num_images, sd.unet.config.in_channels, height // sd.vae_scale_factor, width // sd.vae_scale_factor)
    generator = generator or cpu_generator(seed)
    noise = initial_noise(shape, generator, sd.device, sd.dtype)
    result = sample(
        denoiser, sched, noise, rule, num_steps=steps, generator=generator, callback=callback,
        step_kwargs=step_kwargs_for(sched, pixel_space=sd.vae is None),
    )
    return GenerationResult(decode(sd, result.sample), result, text.truncated[:1])
