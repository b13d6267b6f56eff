"""Cheap RGB views of what a model is predicting mid-sampling: the predicted x̂0 decoded for previews and diagnostics.

Pixel-space models show x̂0 itself. Latent models use the profile's ``preview_vae`` role (TAESD,
``madebyollin/taesd``: diffusers' ``AutoencoderTiny``, a ~1 M-parameter decoder trained to match SD's VAE) or,
when the profile has none, a linear latent → RGB map fitted here by least squares on the shipped photos
encoded by the model's own VAE: crude colours at 1/8 resolution, almost free.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from models.cache import cached
from models.loading.sd import SDComponents, load_weights, unavailable
from models.profiles import ROOT, Profile
from models.runtime import Runtime

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, AutoencoderTiny

PREVIEW_ROLE = "preview_vae"
PHOTOS = ROOT / "assets" / "photos"


@dataclass
class PreviewDecoder:
    """``decoder(x0)``: model-space x̂0 ``[B, C, h, w]`` → RGB in [−1, 1] ``[B, 3, H, W]`` (float32, model device).

    ``kind`` says how ("pixels", "taesd" or "linear"), for the plot's caption.
    """

    kind: str
    decode: Callable[[Tensor], Tensor]
    fallback: str = ""  # why the linear map stands in for the profile's preview_vae ("" when it was not asked to)

    def __call__(self, x0: Tensor) -> Tensor:
        with torch.no_grad():
            return self.decode(x0).float()

    @property
    def caption(self) -> str:
        text = {"pixels": "x̂0 itself (pixel space)", "taesd": "x̂0 decoded by TAESD (preview_vae)",
                "linear": "x̂0 latents through a fitted linear latent→RGB map"}[self.kind]
        return f"{text}; the profile's preview_vae could not be loaded" if self.fallback else text


def to_pil_images(rgb: Tensor) -> list[Image.Image]:
    """RGB in [−1, 1] to 8-bit PIL images."""
    array = ((rgb.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in array]


def load_preview_vae(source: str, runtime: Runtime) -> AutoencoderTiny:
    def build():
        from diffusers import AutoencoderTiny

        try:
            model = load_weights(AutoencoderTiny, source, runtime)
        except Exception as e:  # noqa: BLE001 - the same actionable message as every role
            raise unavailable(PREVIEW_ROLE, source, e) from e
        return model.to(runtime.device).eval().requires_grad_(False)

    return cached((PREVIEW_ROLE, source, runtime), build)


def latent_colour_pairs(vae: AutoencoderKL, photos: list[Path] | None = None) -> tuple[Tensor, Tensor]:
    """(latents ``[N, C]``, colours ``[N, 3]``): each latent cell of the photos, scaled as the UNet sees it, and the
    photo's mean RGB over that cell, in [−1, 1]."""
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    p = next(vae.parameters())
    latents, colours = [], []
    for path in photos or sorted(PHOTOS.glob("*.png")):
        image = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 127.5 - 1
        side = min(image.shape[:2]) // (8 * factor) * 8 * factor
        x = torch.from_numpy(image[:side, :side]).permute(2, 0, 1).unsqueeze(0)
        with torch.no_grad():
            z = vae.encode(x.to(p.device, p.dtype)).latent_dist.mean.float().cpu() * vae.config.scaling_factor
        latents.append(z.flatten(2).squeeze(0).T)
        colours.append(F.avg_pool2d(x, factor).flatten(2).squeeze(0).T)
    return torch.cat(latents), torch.cat(colours)


def fit_linear_preview(vae: AutoencoderKL, photos: list[Path] | None = None) -> tuple[Tensor, Tensor]:
    """(weight ``[3, C]``, bias ``[3]``) of the least-squares map from scaled latents to the cells' colours."""
    z, rgb = latent_colour_pairs(vae, photos)
    design = torch.cat([z, torch.ones(len(z), 1)], dim=1).double()  # float64: the normal equations are stiff
    solution = torch.linalg.lstsq(design, rgb.double()).solution.float()  # [C + 1, 3]
    return solution[:-1].T.contiguous(), solution[-1].contiguous()


def preview_decoder(profile: Profile | None, sd: SDComponents, runtime: Runtime) -> PreviewDecoder:
    """How this model's x̂0 is shown: pixels as they are, latents through TAESD or the fitted linear map.

    A preview is an aid: when the profile's ``preview_vae`` cannot be loaded, the linear map stands in and the
    decoder's ``fallback`` says why; the run itself never fails for it.
    """
    if sd.vae is None:
        return PreviewDecoder("pixels", lambda x0: x0)
    fallback = ""
    if profile is not None and profile.has(PREVIEW_ROLE):
        try:
            taesd = load_preview_vae(profile.source(PREVIEW_ROLE), runtime)
        except ValueError as error:  # ModelUnavailable: missing files, no network, a broken download
            fallback = str(error)
        else:
            return PreviewDecoder("taesd", lambda x0: taesd.decode(x0.to(taesd.dtype), return_dict=False)[0])
    weight, bias = cached(("linear_preview", sd.source, runtime), lambda: fit_linear_preview(sd.vae))
    weight, bias = weight.to(sd.device), bias.to(sd.device)
    return PreviewDecoder("linear", lambda x0: torch.einsum("oc,bchw->bohw", weight, x0.float())
                          + bias.view(1, 3, 1, 1), fallback)
