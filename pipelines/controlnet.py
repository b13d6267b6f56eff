"""ControlNet through the one sampler loop: one or several ControlNets feeding the same UNet.

Usable from a notebook without Gradio::

    sd = load_sd("stable-diffusion-v1-5/stable-diffusion-v1-5")
    net = load_controlnet("lllyasviel/control_v11p_sd15_canny")
    out = controlnet_to_image(sd, [ControlSpec(net, canny_map(photo), scale=1.0)], "a house",
                              rule=GuidanceRule("cfg", 7.5), steps=25, seed=0)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from guidance.rules import GuidanceRule
from guidance.sampler import ModelCall
from guidance.settings import SamplingSettings, settings_from
from models.adapters.denoisers import UNetDenoiser
from models.loading.sd import SDComponents
from pipelines.text_to_image import GenerationResult, generate, latent_shape, prompt_contexts, resolve_size

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel

MAX_CONDITIONING_SCALE = 2.0


@dataclass
class ControlSpec:
    """One ControlNet and how strongly, and over which part of the schedule, it steers.

    ``image`` is the control map (PIL, HxWx3 uint8 array, or a ``[1|B, 3, H, W]`` tensor in [0, 1]).
    ``start``/``end`` are fractions of the schedule: step i of n is on when i/n ≥ start and
    (i+1)/n ≤ end, as diffusers' ``control_guidance_start/end``.
    """

    controlnet: object
    image: Image.Image | np.ndarray | Tensor
    scale: float = 1.0
    start: float = 0.0
    end: float = 1.0

    def __post_init__(self) -> None:
        validate_control(self.scale, self.start, self.end)


def validate_control(scale: float, start: float, end: float) -> None:
    """Readable errors for the three numbers every ControlNet takes."""
    for name, v, hi in (("conditioning_scale", scale, MAX_CONDITIONING_SCALE), ("guidance_start", start, 1.0),
                        ("guidance_end", end, 1.0)):  # fmt: skip
        if not isinstance(v, int | float) or not np.isfinite(v) or not 0 <= v <= hi:
            raise ValueError(f"{name} must be between 0 and {hi:g}, got {v!r}")
    if start > end:
        raise ValueError(f"guidance_start ({start:g}) must not be after guidance_end ({end:g})")


def control_keep(step_index: int, num_steps: int, start: float, end: float) -> float:
    """1.0 when the ControlNet is on at this step, else 0.0 (diffusers' ``controlnet_keep``, verbatim)."""
    return 1.0 - float(step_index / num_steps < start or (step_index + 1) / num_steps > end)


def control_tensor(image: Image.Image | np.ndarray | Tensor, width: int, height: int) -> Tensor:
    """The map as ``[N, 3, H, W]`` in [0, 1] at the output size, prepared exactly as diffusers prepares it."""
    if isinstance(image, Tensor):
        t = image if image.ndim == 4 else image.unsqueeze(0)
        if t.shape[-2:] != (height, width):
            t = torch.nn.functional.interpolate(t.float(), size=(height, width), mode="bilinear", align_corners=False)
        return t.float()
    from diffusers.image_processor import VaeImageProcessor

    # do_normalize=False: ControlNets take maps in [0, 1], not [-1, 1] like the VAE.
    processor = VaeImageProcessor(vae_scale_factor=1, do_convert_rgb=True, do_normalize=False)
    return processor.preprocess(image, height=height, width=width).to(torch.float32)


def map_downsampling(controlnet) -> int:
    """How much the ControlNet's conditioning embedding shrinks the map (SD 1.5's: 8)."""
    return 2 ** (len(controlnet.config.conditioning_embedding_out_channels) - 1)


class _MapEmbeddingOnce(torch.nn.Module):
    """A ControlNet's map embedding that recomputes only when handed a different map tensor.

    The embedding sees the map alone, never x_t or t, so one per run is exact; diffusers recomputes
    it every step. Holding the input keeps its ``id`` from being reused; ``_version`` catches in-place edits.
    """

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner
        self._input: Tensor | None = None
        self._version = -1
        self._output: Tensor | None = None

    def forward(self, cond: Tensor) -> Tensor:
        if cond is not self._input or cond._version != self._version or torch.is_grad_enabled():
            self._input, self._version, self._output = cond, cond._version, self.inner(cond)
        return self._output


@contextmanager
def map_embeddings_once(controlnets: Sequence) -> Iterator[None]:
    """Within the block each ControlNet embeds a given map once; the nets are restored afterwards."""
    originals = {}
    try:
        for net in controlnets:
            if id(net) not in originals:
                originals[id(net)] = (net, net.controlnet_cond_embedding)
                net.controlnet_cond_embedding = _MapEmbeddingOnce(net.controlnet_cond_embedding)
        yield
    finally:
        for net, embedding in originals.values():
            net.controlnet_cond_embedding = embedding


class ControlNetDenoiser(UNetDenoiser):
    """The UNet plus ControlNet residuals, for the one loop.

    Every ControlNet sees the same branch-stacked input and contexts as the UNet (uncond rows
    too, as diffusers does outside guess mode); residuals of several nets are summed in order.
    A net whose range excludes the step is skipped: diffusers runs it at scale 0 and adds
    zeros, which leaves the UNet's input bit for bit the same.
    """

    def __init__(self, unet, controls: Sequence[ControlSpec], maps: Sequence[Tensor], cond: Tensor,
                 uncond: Tensor | None = None, cross_attention_kwargs: dict | None = None):  # fmt: skip
        super().__init__(unet, cond, uncond, cross_attention_kwargs)
        self.controls = list(controls)
        self.maps = list(maps)  # one [B, 3, H, W] per control, already on the device and dtype
        self.active: list[list[bool]] = []  # per step, per net: did it run (for the diagnostics)
        self._branch_maps: dict[tuple[int, int, int, int], Tensor] = {}

    def _stacked(self, image: Tensor, branches: int, rows: slice) -> Tensor:
        """The map repeated once per branch (those ``rows`` of it), built on the first step and reused.

        Reusing the same tensor every step lets :func:`map_embeddings_once` embed it once per run.
        """
        key = (id(image), branches, rows.start, rows.stop)
        if key not in self._branch_maps:
            self._branch_maps[key] = (torch.cat([image] * branches) if branches > 1 else image)[rows]
        return self._branch_maps[key]

    def scales(self, call: ModelCall) -> list[float]:
        """Each net's conditioning scale at this step (0 outside its start/end range)."""
        return [spec.scale * control_keep(call.step_index, call.num_steps, spec.start, spec.end)
                for spec in self.controls]

    def residuals(self, x: Tensor, t: Tensor, call: ModelCall, context: Tensor, rows: slice):
        down = mid = None
        for spec, image, scale in zip(self.controls, self.maps, self.scales(call), strict=True):
            if scale == 0:
                continue
            cond = self._stacked(image, len(call.branches), rows)
            d, m = spec.controlnet(x, t, encoder_hidden_states=context, controlnet_cond=cond,
                                   conditioning_scale=scale, return_dict=False)  # fmt: skip
            if down is None:
                down, mid = list(d), m
            else:
                down, mid = [a + b for a, b in zip(down, d, strict=True)], mid + m
        return down, mid

    def __call__(self, x: Tensor, t: Tensor, call: ModelCall) -> Tensor:
        self.active.append([scale != 0 for scale in self.scales(call)])
        return super().__call__(x, t, call)

    def model_call(self, x: Tensor, t: Tensor, call: ModelCall, rows: slice) -> Tensor:
        # (autoguidance's weaker model runs without the ControlNets: the base class runs it on text alone)
        context = self.contexts(call)[rows]
        down, mid = self.residuals(x, t, call, context, rows)
        return self.unet(
            x, t, encoder_hidden_states=context, cross_attention_kwargs=self.cross_attention_kwargs,
            down_block_additional_residuals=down, mid_block_additional_residual=mid, return_dict=False,
        )[0]


@dataclass
class ControlNetResult(GenerationResult):
    maps: list[Tensor] | None = None  # the maps as fed to each net, [1, 3, H, W] in [0, 1]
    active: list[list[bool]] | None = None  # per step, per net


@torch.no_grad()
def controlnet_to_image(
    sd: SDComponents,
    controls: Sequence[ControlSpec],
    prompt: str,
    *,
    negative_prompt: str = "",
    rule: GuidanceRule,
    settings: SamplingSettings | None = None,
    generator: torch.Generator | None = None,
    cross_attention_kwargs: dict | None = None,
    weak: UNet2DConditionModel | None = None,
    **sampling: Any,
) -> ControlNetResult:
    """Text-to-image steered by one or more ControlNets; CFG's unconditional branch is the negative prompt.
    ``settings`` (or its fields as keywords: ``steps=25, seed=0``) say how to sample."""
    if not controls:
        raise ValueError("give at least one ControlNet")
    settings = settings_from(settings, sampling)
    num_images = settings.num_images
    width, height = resolve_size(sd, settings.width, settings.height)
    for spec in controls:
        if map_downsampling(spec.controlnet) != sd.vae_scale_factor:
            raise ValueError(
                f"this ControlNet shrinks its map by {map_downsampling(spec.controlnet)} but the model's latents are "
                f"1/{sd.vae_scale_factor} of the image: the ControlNet was trained for a different base model"
            )
    maps = [control_tensor(spec.image, width, height) for spec in controls]
    batched = [
        (m if m.shape[0] == num_images else m[:1].repeat_interleave(num_images, dim=0)).to(
            sd.device, spec.controlnet.dtype
        )
        for m, spec in zip(maps, controls, strict=True)
    ]
    cond, uncond, truncated = prompt_contexts(sd, prompt, negative_prompt, num_images)
    denoiser = ControlNetDenoiser(sd.unet, controls, batched, cond, uncond, cross_attention_kwargs)
    with map_embeddings_once([spec.controlnet for spec in controls]):
        images, result = generate(sd, denoiser, rule, latent_shape(sd, width, height, num_images), settings,
                                  generator=generator, weak=weak)
    return ControlNetResult(images=images, result=result, truncated=truncated,
                            maps=[m[:1] for m in maps], active=denoiser.active)  # fmt: skip
