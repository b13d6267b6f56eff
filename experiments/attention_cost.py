"""What attention costs in a UNet: every attention layer's matrix size and FLOPs, and the measured price of
materialising it.

The lecture's point: a cross-attention matrix is N × M (image tokens × text tokens) and grows linearly with the
pixel count, a self-attention matrix is N × N and grows with its square. So SD puts attention only on its coarser
feature maps, and Flash-style attention (``scaled_dot_product_attention``) never stores the matrix at all.

**Layers.** :func:`attention_layers` does not read the numbers off the config: it builds the UNet from its config
on the ``meta`` device (shapes only, no memory, no arithmetic) and runs one forward pass at the asked resolution
with a hook on every diffusers ``Attention`` module, recording what each one is really handed: query tokens N and
key tokens M from its inputs, heads and head dimension from the module. A layer is "cross" when it was given
the text states (``encoder_hidden_states``), "self" otherwise, whatever its name (``attn1`` / ``attn2``).

**Analytic costs,** per batch element and per layer: the attention matrix has ``heads × N × M`` entries (4 bytes
each in fp32, 2 in fp16); QKᵀ and AV each take ``2 × heads × N × M × head_dim`` FLOPs (a multiply-add counts 2;
the softmax, the projections and the scaling are left out). Totals per image and denoising step sum the layers
and double for classifier-free guidance, which runs the conditional and unconditional rows as a batch of two.

**Measured costs** live in ``experiments.attention_timing``; the plot and the tables in ``reporting.attention_cost``;
the command line in ``scripts/tools/attention_cost.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel

BYTES_PER_ELEMENT = {"fp32": 4, "fp16": 2}
CFG_BATCH = 2  # classifier-free guidance evaluates the conditional and unconditional rows together

# Stable Diffusion 1.5's UNet, from its published unet/config.json (the values that shape attention; the rest are
# diffusers' defaults). diffusers' ``attention_head_dim = 8`` here is really the number of heads (a historical
# naming slip kept for compatibility), so the head dimension is 320/8 = 40, 640/8 = 80 and 1280/8 = 160.
SD15_UNET_CONFIG: dict[str, Any] = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
)
SD15_VAE_SCALE = 8  # the VAE's four levels halve the side three times
SD15_TEXT_TOKENS = 77  # CLIP ViT-L/14's context length


@dataclass(frozen=True)
class AttentionLayer:
    """One attention layer at one image resolution, as the forward pass handed it its inputs."""

    name: str
    kind: str  # "self" (keys are the image tokens) or "cross" (keys are the text tokens)
    resolution: int  # image side in pixels
    query_tokens: int  # N: positions of the feature map
    key_tokens: int  # M: N again for self-attention, the text length for cross-attention
    heads: int
    head_dim: int
    query_dim: int  # channels of the feature map
    key_dim: int  # channels of the keys' source (the feature map, or the text states)

    def matrix_bytes(self, precision: str = "fp32") -> int:
        """The attention matrix (every head) for one batch element."""
        return self.heads * self.query_tokens * self.key_tokens * BYTES_PER_ELEMENT[precision]

    @property
    def qk_flops(self) -> int:
        """QKᵀ for one batch element: heads × N × M dot products of length head_dim, 2 FLOPs per multiply-add."""
        return 2 * self.heads * self.query_tokens * self.key_tokens * self.head_dim

    @property
    def av_flops(self) -> int:
        """AV (probabilities times values): the same count as QKᵀ."""
        return 2 * self.heads * self.query_tokens * self.key_tokens * self.head_dim

    def as_row(self) -> dict[str, Any]:
        return {**asdict(self), "matrix_bytes_fp32": self.matrix_bytes("fp32"),
                "matrix_bytes_fp16": self.matrix_bytes("fp16"), "qk_flops": self.qk_flops,
                "av_flops": self.av_flops}


def model_factor(unet_config: Mapping[str, Any], vae_scale_factor: int) -> int:
    """The image side must be a multiple of this: the VAE's factor times one halving per UNet downsampler
    (every down block but the last has one), so that each level's feature map has a whole number of positions."""
    return vae_scale_factor * 2 ** (len(unet_config["down_block_types"]) - 1)


def attention_layers(unet_config: Mapping[str, Any], resolution: int, vae_scale_factor: int,
                     text_tokens: int) -> list[AttentionLayer]:
    """Every attention layer of the UNet described by ``unet_config`` at a ``resolution``-pixel square image, in
    the order the forward pass calls them (walked on the meta device: see the module docstring)."""
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import Attention

    side = resolution // vae_scale_factor
    if side * vae_scale_factor != resolution or side < 1:
        raise ValueError(f"resolution {resolution} is not a multiple of the VAE factor {vae_scale_factor}")
    config = {k: v for k, v in dict(unet_config).items() if not k.startswith("_")}
    with torch.device("meta"):
        unet: UNet2DConditionModel = UNet2DConditionModel.from_config(config)
    found: list[AttentionLayer] = []

    def recorder(name: str, module: Attention):
        def hook(_module, args, kwargs, _output) -> None:
            hidden = args[0] if args else kwargs["hidden_states"]
            context = kwargs.get("encoder_hidden_states")
            if context is None and len(args) > 1:
                context = args[1]
            keys = hidden if context is None else context
            inner = module.to_q.out_features
            found.append(AttentionLayer(
                name=name, kind="self" if context is None else "cross", resolution=resolution,
                query_tokens=int(hidden.shape[1]), key_tokens=int(keys.shape[1]), heads=int(module.heads),
                head_dim=inner // int(module.heads), query_dim=int(hidden.shape[-1]), key_dim=int(keys.shape[-1])))

        return hook

    for name, module in unet.named_modules():
        if isinstance(module, Attention):
            module.register_forward_hook(recorder(name, module), with_kwargs=True)
    sample = torch.zeros(1, unet.config.in_channels, side, side, device="meta")
    text = torch.zeros(1, text_tokens, unet.config.cross_attention_dim, device="meta")
    with torch.no_grad():
        unet(sample, torch.tensor([1], device="meta"), encoder_hidden_states=text)
    return found


def unet_attention_layers(unet: UNet2DConditionModel, resolutions: Sequence[int], vae_scale_factor: int,
                          text_tokens: int) -> list[AttentionLayer]:
    """:func:`attention_layers` for a loaded UNet (its config; its weights are not used) at several resolutions."""
    return [layer for r in resolutions for layer in attention_layers(unet.config, r, vae_scale_factor, text_tokens)]


# ---------------------------------------------------------------------- totals


def step_totals(layers: Sequence[AttentionLayer], batch: int = CFG_BATCH) -> dict[str, dict[str, Any]]:
    """Per resolution: summed matrix bytes and FLOPs per image (batch element) and per denoising step (``batch``
    rows: 2 under CFG), split by kind, and the largest single matrix (what must fit at once when materialised)."""
    out: dict[str, dict[str, Any]] = {}
    for resolution in sorted({layer.resolution for layer in layers}):
        at = [layer for layer in layers if layer.resolution == resolution]
        row: dict[str, Any] = {"layers": len(at), "batch_per_step": batch}
        for kind in ("self", "cross"):
            of_kind = [layer for layer in at if layer.kind == kind]
            flops = sum(layer.qk_flops + layer.av_flops for layer in of_kind)
            row[kind] = {
                "layers": len(of_kind),
                "matrix_bytes_fp32_per_image": sum(layer.matrix_bytes("fp32") for layer in of_kind),
                "matrix_bytes_fp16_per_image": sum(layer.matrix_bytes("fp16") for layer in of_kind),
                "largest_matrix_bytes_fp32": max((layer.matrix_bytes("fp32") for layer in of_kind), default=0),
                "flops_per_image": flops,
                "flops_per_step": flops * batch,
            }
        row["flops_per_step"] = row["self"]["flops_per_step"] + row["cross"]["flops_per_step"]
        row["matrix_bytes_fp32_per_step"] = batch * (row["self"]["matrix_bytes_fp32_per_image"]
                                                     + row["cross"]["matrix_bytes_fp32_per_image"])
        out[str(resolution)] = row
    return out


def largest_layers(layers: Sequence[AttentionLayer]) -> dict[tuple[int, str], AttentionLayer]:
    """Per (resolution, kind) the layer with the most query tokens (the first such): the one worth measuring."""
    chosen: dict[tuple[int, str], AttentionLayer] = {}
    for layer in layers:
        key = (layer.resolution, layer.kind)
        if key not in chosen or layer.query_tokens > chosen[key].query_tokens:
            chosen[key] = layer
    return chosen


# ---------------------------------------------------------------------- the lecture's worked numbers


def lecture_numbers(latent_sides: Sequence[int] = (64, 256), text_tokens: int = 77, heads: int = 1,
                    bytes_per_element: int = 4) -> list[dict[str, Any]]:
    """The lecture's example: a ``side × side`` latent map (N = side² tokens) against a 77-token text, one head,
    fp32, one batch element. Both units are given because the lecture mixes them: its "1.26 MB" and "20 MB" for
    cross-attention are decimal megabytes (10⁶ B), its "64 MB" and "16 GB" for self-attention are binary
    (2²⁰ B, 2³⁰ B): 64×64 gives 1 261 568 B (1.26 MB = 1.20 MiB) against 67 108 864 B (64 MiB = 67.1 MB);
    256×256 gives 20 185 088 B (20.2 MB = 19.25 MiB) against 17 179 869 184 B (16 GiB = 17.2 GB)."""
    rows = []
    for side in latent_sides:
        n = side * side
        cross = heads * n * text_tokens * bytes_per_element
        self_ = heads * n * n * bytes_per_element
        rows.append(dict(latent_side=side, query_tokens=n, text_tokens=text_tokens, heads=heads,
                         bytes_per_element=bytes_per_element, cross_bytes=cross, self_bytes=self_,
                         cross_mb=cross / 1e6, cross_mib=cross / 2**20, self_mb=self_ / 1e6, self_mib=self_ / 2**20,
                         self_gib=self_ / 2**30, self_over_cross=self_ / cross))
    return rows


# ---------------------------------------------------------------------- measuring


def materialised_peak_bytes(layer: AttentionLayer, bytes_per_element: int, batch: int = 1) -> int:
    """What the materialised call holds at its worst: the score and probability matrices at once (diffusers'
    ``get_attention_scores`` allocates the scores, then the softmax output before freeing them) plus the
    projected queries, keys, values and the output."""
    matrices = 2 * layer.heads * layer.query_tokens * layer.key_tokens
    projections = layer.heads * layer.head_dim * (2 * layer.query_tokens + 2 * layer.key_tokens)
    return batch * (matrices + projections) * bytes_per_element


# ---------------------------------------------------------------------- presenting


def fitted_slope(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Slope of log y against log x (least squares); None with fewer than two distinct x."""
    if len(set(x)) < 2:
        return None
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


def kind_series(layers: Sequence[AttentionLayer], kind: str) -> tuple[list[int], list[int], list[int]]:
    """Per resolution (ascending): the largest layer's query tokens N, its matrix bytes (fp32, per batch element)
    and the resolution."""
    chosen = sorted((layer for (_, k), layer in largest_layers(layers).items() if k == kind),
                    key=lambda layer: layer.resolution)
    return ([layer.query_tokens for layer in chosen], [layer.matrix_bytes("fp32") for layer in chosen],
            [layer.resolution for layer in chosen])


def slopes(layers: Sequence[AttentionLayer]) -> dict[str, float | None]:
    """Fitted log–log slope of the largest matrix against N per kind: ≈ 2 for self, ≈ 1 for cross."""
    return {kind: fitted_slope(*kind_series(layers, kind)[:2]) for kind in ("self", "cross")}


def would_not_fit(layers: Sequence[AttentionLayer], free_bytes: int, precision: str = "fp32",
                  batch: int = CFG_BATCH) -> set[tuple[int, str]]:
    """(resolution, kind) pairs whose largest layer, materialised for one CFG step, needs more than ``free_bytes``."""
    element = BYTES_PER_ELEMENT[precision]
    return {key for key, layer in largest_layers(layers).items()
            if materialised_peak_bytes(layer, element, batch) > free_bytes}


def is_close_ratio(ratio: float, expected: float, tolerance: float) -> bool:
    """``ratio`` within ``tolerance`` (a fraction) of ``expected``, compared in log space."""
    return abs(math.log(ratio / expected)) <= math.log1p(tolerance)


