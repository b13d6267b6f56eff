"""CLIP-image conditioning through the one sampler loop: image variations, IP-Adapter and cross-modal.

Usable from a notebook without Gradio::

    vsd = load_image_variations(load_profile("full"))
    out = variations(vsd, Image.open("cat.png"), rule=GuidanceRule("cfg", 3.0), steps=25, seed=0)

* **variations**: the UNet's cross-attention context is one token, the projected CLIP image
  embedding; the unconditional branch is the zero embedding, as the model was trained.
* **cross-modal**: the same model fed a CLIP *text* embedding (length matched to the image's),
  or a slerp between image and text embeddings.
* **ip-adapter**: a text model with an extra image cross-attention, weighted by ``image_scale``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from torch import Tensor

from condition.image_embed import (
    cosine,
    encoder_input_size,
    image_embeddings,
    match_norm,
    preprocess,
    processor_stats,
    slerp,
    text_embeddings,
)
from condition.images import sanitize_image
from guidance.rules import GuidanceRule
from guidance.sampler import ModelCall
from guidance.settings import SamplingSettings, settings_from
from models.adapters.denoisers import UNetDenoiser
from models.loading.sd import SDComponents
from pipelines.text_to_image import GenerationResult, generate, latent_shape, prompt_contexts, resolve_size

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel

    from models.loading.image import ClipReadout, IPAdapterComponents

MODES = ("variations", "ip-adapter", "cross-modal")
MAX_IMAGE_SCALE = 1.5  # IP-Adapter's image weight: 1 is its training weight, a little more is still usable


class IPAdapterDenoiser(UNetDenoiser):
    """A UNet with IP-Adapter processors: text context per branch plus image embeddings per branch.

    The image embeddings are stacked in the same branch order as the text (uncond rows first),
    which is also diffusers' ``[negative, positive]`` order.
    """

    def __init__(self, unet, cond: Tensor, uncond: Tensor | None, image_cond: Tensor, image_uncond: Tensor):
        super().__init__(unet, cond, uncond)
        self.image = {"cond": image_cond, "uncond": image_uncond}

    def model_call(self, x: Tensor, t: Tensor, call: ModelCall, rows: slice) -> Tensor:
        # (autoguidance's weaker model has no adapter: the base class runs it on text alone)
        parts = [self.image[self.CONTEXT[b]] for b in call.branches]
        embeds = torch.cat(parts) if len(parts) > 1 else parts[0]
        return self.unet(
            x, t, encoder_hidden_states=self.contexts(call)[rows], added_cond_kwargs={"image_embeds": [embeds[rows]]},
            return_dict=False,
        )[0]


def variation_pixels(vsd: SDComponents, image: Image.Image) -> Tensor:
    """The model card's preprocessing with the model's own encoder size and feature-extractor statistics."""
    encoder = vsd.extras["image_encoder"]
    mean, std = processor_stats(vsd.extras.get("feature_extractor"))
    return preprocess(image, encoder_input_size(encoder), mean, std)


def _run(sd: SDComponents, denoiser, rule: GuidanceRule, settings: SamplingSettings,
         generator: torch.Generator | None, weak: UNet2DConditionModel | None = None) -> GenerationResult:
    width, height = resolve_size(sd, settings.width, settings.height)
    images, result = generate(sd, denoiser, rule, latent_shape(sd, width, height, settings.num_images), settings,
                              generator=generator, weak=weak)
    return GenerationResult(images, result, [])


@torch.no_grad()
def from_embedding(
    vsd: SDComponents, embedding: Tensor, *, rule: GuidanceRule, settings: SamplingSettings | None = None,
    generator: torch.Generator | None = None, weak: UNet2DConditionModel | None = None, **sampling: Any,
) -> GenerationResult:
    """Sample the image-variations model conditioned on one CLIP-space vector ``[1, D]`` (or ``[D]``);
    ``settings`` (or its fields as keywords) say how."""
    settings = settings_from(settings, sampling)
    embedding = embedding.reshape(1, 1, -1).to(vsd.device, vsd.dtype)
    cond = embedding.repeat(settings.num_images, 1, 1)
    denoiser = UNetDenoiser(vsd.unet, cond, torch.zeros_like(cond))
    return _run(vsd, denoiser, rule, settings, generator, weak)


def variations(vsd: SDComponents, image: Image.Image | None = None, *, pixels: Tensor | None = None,
               **kwargs) -> GenerationResult:
    """Image variations of ``image`` (or of already preprocessed ``pixels``); kwargs as :func:`from_embedding`."""
    if pixels is None:
        pixels = variation_pixels(vsd, sanitize_image(image))
    return from_embedding(vsd, image_embeddings(vsd.extras["image_encoder"], pixels), **kwargs)


def cross_modal_embedding(
    vsd: SDComponents, clip: ClipReadout | None, image: Image.Image | None, prompt: str, mix: float
) -> Tensor:
    """slerp(image embedding, text embedding rescaled to the image's length, mix); ``[1, D]``.

    Without an image (only allowed at ``mix = 1``) there is no length to match, so the text
    embedding is used as CLIP returns it.
    """
    if not 0.0 <= mix <= 1.0:
        raise ValueError(f"mix must be between 0 and 1, got {mix!r}")
    image_emb = None
    if image is not None:
        image_emb = image_embeddings(vsd.extras["image_encoder"], variation_pixels(vsd, sanitize_image(image))).float()
    elif mix < 1.0:
        raise ValueError("cross-modal mode needs an image unless mix = 1 (pure text)")
    if mix == 0.0:
        return image_emb
    if clip is None:
        raise ValueError("cross-modal mode with mix > 0 needs the 'clip' model for the text embedding")
    width = vsd.unet.config.cross_attention_dim
    if clip.model.config.projection_dim != width:
        raise ValueError(f"the 'clip' model's projection_dim ({clip.model.config.projection_dim}) differs from the "
                         f"image-variations UNet's context width ({width}): they must be the same CLIP")
    text_emb = text_embeddings(clip.model, clip.tokenizer, [prompt]).float()
    if image_emb is None:
        return text_emb
    return slerp(image_emb, match_norm(text_emb, image_emb), mix)


def cross_modal(vsd: SDComponents, clip: ClipReadout | None, image: Image.Image | None, prompt: str, mix: float,
                **kwargs) -> GenerationResult:
    return from_embedding(vsd, cross_modal_embedding(vsd, clip, image, prompt, mix), **kwargs)


def ip_adapter_pixels(ipa: IPAdapterComponents, image: Image.Image) -> Tensor:
    """IP-Adapter was trained on ``CLIPImageProcessor`` inputs (short side resized, centre crop), as diffusers does."""
    return ipa.feature_extractor(images=sanitize_image(image), return_tensors="pt").pixel_values


@torch.no_grad()
def ip_adapter(
    ipa: IPAdapterComponents, image: Image.Image | None, prompt: str, *, image_scale: float, negative_prompt: str = "",
    pixels: Tensor | None = None, rule: GuidanceRule, settings: SamplingSettings | None = None,
    generator: torch.Generator | None = None, weak: UNet2DConditionModel | None = None, **sampling: Any,
) -> GenerationResult:
    """Text + image prompt; the unconditional branch is the negative prompt with the zero image embedding."""
    if not 0.0 <= image_scale <= MAX_IMAGE_SCALE:
        raise ValueError(f"image_scale must be between 0 and {MAX_IMAGE_SCALE:g}, got {image_scale!r}")
    settings = settings_from(settings, sampling)
    sd = ipa.sd
    if pixels is None:
        pixels = ip_adapter_pixels(ipa, image)
    emb = image_embeddings(ipa.image_encoder, pixels).to(sd.device, sd.dtype)
    image_cond = emb.unsqueeze(1).repeat(settings.num_images, 1, 1)
    cond, uncond, truncated = prompt_contexts(sd, prompt, negative_prompt, settings.num_images)
    denoiser = IPAdapterDenoiser(ipa.unet, cond, uncond, image_cond, torch.zeros_like(image_cond))
    adapted = SDComponents(ipa.unet, sd.text_encoder, sd.tokenizer, sd.scheduler_config, sd.vae, sd.source)
    with ipa.lock:
        ipa.set_scale(image_scale)
        out = _run(adapted, denoiser, rule, settings, generator, weak)
    out.truncated = truncated
    return out


@torch.no_grad()
def clip_scores(clip: ClipReadout, outputs: list[Image.Image], image: Image.Image | None, prompt: str) -> dict:
    """Cosine similarities in the ``clip`` model's space: output↔input image, output↔prompt, input↔prompt."""
    p = next(clip.model.parameters())

    def embed_images(images: list[Image.Image]) -> Tensor:
        pixels = clip.processor(images=[sanitize_image(i) for i in images], return_tensors="pt").pixel_values
        out = clip.model.get_image_features(pixel_values=pixels.to(p.device, p.dtype))
        return getattr(out, "pooler_output", out).float()

    out_emb = embed_images(outputs)
    scores: dict = {"model": clip.source}
    in_emb = embed_images([image]) if image is not None else None
    text_emb = text_embeddings(clip.model, clip.tokenizer, [prompt]).float() if prompt else None
    scores["output_vs_input_image"] = cosine(out_emb, in_emb).tolist() if in_emb is not None else None
    scores["output_vs_prompt"] = cosine(out_emb, text_emb).tolist() if text_emb is not None else None
    scores["input_vs_prompt"] = (float(cosine(in_emb, text_emb)[0])
                                 if in_emb is not None and text_emb is not None else None)
    return scores
