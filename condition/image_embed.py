"""Image conditioning: pictures to projected CLIP embeddings, and the CLIP text side of the same space.

The preprocessing follows the sd-image-variations model card, which differs from
``CLIPImageProcessor``: the whole image is squashed (no crop) to the encoder's input size with
bicubic interpolation *without* anti-aliasing, then normalised with CLIP's mean and std. The
model was fine-tuned on exactly that input, so matching it matters more than looking nicer.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from condition.images import sanitize_image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def encoder_input_size(image_encoder) -> int:
    return int(image_encoder.config.image_size)


def preprocess(
    image: Image.Image, size: int, mean: tuple[float, ...] = CLIP_MEAN, std: tuple[float, ...] = CLIP_STD
) -> Tensor:
    """``[1, 3, size, size]`` as the model card's torchvision transform makes it.

    ``ToTensor`` → ``Resize((size, size), BICUBIC, antialias=False)`` → ``Normalize(mean, std)``;
    ``torchvision``'s tensor resize is ``F.interpolate(..., align_corners=False)`` with no clamp.
    """
    array = np.asarray(sanitize_image(image), dtype=np.float32) / 255.0
    x = torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=False)
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def processor_stats(feature_extractor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The feature extractor's normalisation (CLIP's defaults when it has none)."""
    mean = tuple(getattr(feature_extractor, "image_mean", None) or CLIP_MEAN)
    std = tuple(getattr(feature_extractor, "image_std", None) or CLIP_STD)
    return mean, std


@torch.no_grad()
def image_embeddings(image_encoder, pixels: Tensor) -> Tensor:
    """Projected CLIP image embeddings ``[B, projection_dim]`` (``image_embeds``, not normalised)."""
    p = next(image_encoder.parameters())
    return image_encoder(pixels.to(p.device, p.dtype)).image_embeds


@torch.no_grad()
def text_embeddings(clip_model, tokenizer, prompts: list[str]) -> Tensor:
    """Projected CLIP text embeddings ``[B, projection_dim]`` (``text_embeds``, not normalised)."""
    max_length = min(tokenizer.model_max_length, clip_model.config.text_config.max_position_embeddings)
    ids = tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    p = next(clip_model.parameters())
    out = clip_model.get_text_features(input_ids=ids.input_ids.to(p.device),
                                       attention_mask=ids.attention_mask.to(p.device))
    return getattr(out, "pooler_output", out)


def match_norm(v: Tensor, reference: Tensor) -> Tensor:
    """``v`` rescaled per row to ``reference``'s L2 norm.

    Text and image embeddings of CLIP differ in length; the UNet was trained on image-embedding
    lengths, so a text embedding keeps its direction but borrows the image's length.
    """
    return v * (reference.norm(dim=-1, keepdim=True) / v.norm(dim=-1, keepdim=True).clamp_min(1e-12))


def slerp(a: Tensor, b: Tensor, t: float) -> Tensor:
    """Spherical interpolation from ``a`` (t=0) to ``b`` (t=1) along the great circle of their directions.

    Lengths are interpolated linearly, so two equal-length inputs give equal-length outputs.
    The end points are returned exactly so ``mix=0`` reproduces the pure image embedding bit for bit.
    """
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"mix must be between 0 and 1, got {t!r}")
    if t == 0.0:
        return a.clone()
    if t == 1.0:
        return b.clone()
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    ua, ub = a / na.clamp_min(1e-12), b / nb.clamp_min(1e-12)
    cos = (ua * ub).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    # Nearly parallel directions make sin(omega) vanish; linear interpolation is the limit there.
    near = sin.abs() < 1e-6
    wa = torch.where(near, 1 - t, torch.sin((1 - t) * omega) / torch.where(near, 1.0, sin))
    wb = torch.where(near, torch.full_like(sin, t), torch.sin(t * omega) / torch.where(near, 1.0, sin))
    direction = wa * ua + wb * ub
    direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return direction * ((1 - t) * na + t * nb)


def cosine(a: Tensor, b: Tensor) -> Tensor:
    return F.cosine_similarity(a.float(), b.float(), dim=-1)
