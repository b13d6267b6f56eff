"""Rectified-flow text-to-image (Stable Diffusion 3 / 3.5, and the toy MM-DiT) through the one sampler loop.

Rectified flow (Esser et al. 2024, "Scaling Rectified Flow Transformers for High-Resolution Image Synthesis"):
x_t = (1 − σ) x0 + σ ε, the transformer predicts the velocity v = ε − x0, and the flow-matching Euler scheduler steps
x_{σ'} = x_σ + (σ' − σ) v̂ down a shifted σ schedule (σ ← s σ / (1 + (s − 1) σ), s = 3 for SD3.5). The loop guides v
itself: CFG on v is the pipeline's v̂ = v_u + w (v_c − v_u), and the norm-based methods (APG, CFG-Zero*, rescale) are
the flow forms their papers write. Notebook use::

    flow = load_flow("stabilityai/stable-diffusion-3.5-medium")   # gated: HF_TOKEN; or a local folder
    out = flow_to_image(flow, "a red circle", rule=GuidanceRule("cfg", 4.5), steps=28, seed=0)
    out.images                       # [1, 3, 1024, 1024] in [0, 1]

With ``GuidanceRule("cfg", w)`` and an empty negative prompt this is ``StableDiffusion3Pipeline(prompt,
guidance_scale=w, num_inference_steps=n, generator=torch.Generator().manual_seed(seed))`` (tests/test_flow_parity.py
compares the two).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from condition.flow_text import FlowPrompt, encode_flow_prompts
from guidance.rules import Rule, RunFacts
from guidance.sampler import initial_noise, sample
from guidance.settings import SamplingSettings, settings_from
from models.adapters.flow_denoiser import FlowDenoiser, check_branches
from models.loading.flow import FlowComponents
from models.runtime import cpu_generator, row_budget
from pipelines.text_to_image import GenerationResult, check_size

FLOW_SCHEDULER = "flow-euler"  # the scheduler's name in RunFacts: the flow-matching Euler scheduler
# Methods with no rectified-flow form here, and why (every other registered method acts on the velocity).
NO_FLOW_FORM = {
    "cfg++": "cfg++ has no flow form here: its update rewrites a deterministic DDIM step (x̂0 from the guided "
             "prediction, re-noised with the unconditional one along ᾱ), and no flow form of it is published to "
             "follow; choose another method for this model",
}


def check_flow_rule(rule: Rule) -> None:
    """``ValueError`` with a one-line reason for a method that has no flow form here (CFG++)."""
    reason = NO_FLOW_FORM.get(getattr(rule, "name", ""))
    if reason is not None:
        raise ValueError(reason)


def resolve_flow_size(flow: FlowComponents, width: int | None, height: int | None) -> tuple[int, int]:
    """Missing sides default to the model's native size; sides must be whole transformer patches of latent cells
    (16 pixels for SD3: a 2 × 2 patch of an 8× VAE's latents)."""
    width, height = width or flow.native_size, height or flow.native_size
    check_size(width, height, flow.size_multiple)
    largest = flow.max_size
    if largest is not None and max(width, height) > largest:
        raise ValueError(f"this flow model draws at most {largest}×{largest} px (its positional embedding covers "
                         f"{largest // flow.size_multiple} patches a side); got {width}×{height}")
    return width, height


def flow_prompts(flow: FlowComponents, prompt: str) -> FlowPrompt:
    """One prompt encoded as SD3 encodes it, with the model's own encoders."""
    return encode_flow_prompts(
        [prompt], tokenizer=flow.tokenizer, text_encoder=flow.text_encoder, tokenizer_2=flow.tokenizer_2,
        text_encoder_2=flow.text_encoder_2, tokenizer_3=flow.tokenizer_3, text_encoder_3=flow.text_encoder_3,
        joint_width=int(flow.transformer.config.joint_attention_dim), device=flow.device)


def make_flow_scheduler(flow: FlowComponents, rule: Rule):
    """A fresh ``FlowMatchEulerDiscreteScheduler`` from the model's config (its shift), with what the rule asks."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler.from_config(flow.scheduler_config, **rule.scheduler_options())


def decode_flow(flow: FlowComponents, x: Tensor) -> Tensor:
    """Model space to images in [0, 1], float32 on the CPU: SD3 undoes its latent normalisation
    (z / scaling_factor + shift_factor) before the VAE; pixel-space models output [−1, 1] directly.

    At most the row budget of latents is decoded at a time (``models.runtime.rows_at_most``).
    """
    if flow.vae is not None:
        config = flow.vae.config
        latents = (x / config.scaling_factor + (getattr(config, "shift_factor", None) or 0.0)).to(flow.vae.dtype)
        step = row_budget() or latents.shape[0]
        x = torch.cat([flow.vae.decode(latents[i:i + step], return_dict=False)[0]
                       for i in range(0, latents.shape[0], step)])
    return (x.float() / 2 + 0.5).clamp(0, 1).cpu()


@torch.no_grad()
def flow_to_image(
    components: FlowComponents,
    prompt: str,
    *,
    negative_prompt: str = "",
    rule: Rule,
    settings: SamplingSettings | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
    **sampling: Any,
) -> GenerationResult:
    """Sample ``settings.num_images`` images for one prompt; the unconditional branch is the negative prompt (SD3's
    is the empty one).

    ``settings`` (or its fields as keywords: ``steps=28, seed=0``) say how many steps, the seed, size and hooks; the
    scheduler is always the model's flow-matching Euler scheduler, so ``settings.scheduler`` and ``ddim_eta`` are not
    read. The rule is checked before any model work: CFG++ (no flow form), and methods needing a branch this model
    cannot run (autoguidance's weaker model, PAG's perturbed attention), are refused with the reason.
    """
    settings = settings_from(settings, sampling)
    if not isinstance(prompt, str) or not isinstance(negative_prompt, str):
        raise ValueError("prompt and negative_prompt must be strings")
    if settings.steps < 1:
        raise ValueError(f"steps must be at least 1, got {settings.steps!r}")
    if not isinstance(settings.num_images, int) or settings.num_images < 1:
        raise ValueError(f"num_images must be a whole number of at least 1, got {settings.num_images!r}")
    check_flow_rule(rule)
    rule.check(RunFacts(FLOW_SCHEDULER, components.pixel_space, 0.0))
    check_branches({b for i in range(settings.steps) for b in rule.branches_at(i, settings.steps)})
    width, height = resolve_flow_size(components, settings.width, settings.height)

    cond, uncond = flow_prompts(components, prompt), flow_prompts(components, negative_prompt)
    denoiser = FlowDenoiser(components.transformer, cond.tokens, cond.pooled, uncond.tokens, uncond.pooled)
    scheduler = make_flow_scheduler(components, rule)
    factor = components.vae_scale_factor
    shape = (settings.num_images, components.latent_channels, height // factor, width // factor)
    generator = generator or cpu_generator(settings.seed)
    noise = initial_noise(shape, generator, components.device, components.dtype)
    result = sample(denoiser, scheduler, noise, rule, settings, generator=generator)
    return GenerationResult(decode_flow(components, result.sample), result, cond.truncated)
