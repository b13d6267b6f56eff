"""What attention costs in a UNet and in an MM-DiT: every attention layer's matrix size and FLOPs, and the measured
price of materialising it.

The lecture's point: a cross-attention matrix is N × M (image tokens × text tokens) and grows linearly with the
pixel count, a self-attention matrix is N × N and grows with its square. So SD puts attention only on its coarser
feature maps, and Flash-style attention (``scaled_dot_product_attention``) never stores the matrix at all. An MM-DiT
(SD3, Esser et al. 2024) has neither: each block's *joint* attention (diffusers' ``Attention`` with
``JointAttnProcessor2_0``) projects the image and the text tokens with their own weights, concatenates them and runs
one softmax over all N + M: one (N + M)² matrix per layer where a UNet has N² self plus N·M cross. Text tokens attend
to the image too, and the image side of it grows with the square of the pixel count like self-attention, at every
block, at full resolution (no coarser levels). SD3.5's "dual attention" blocks add a second, image-only
self-attention (N²).

**Layers.** :func:`attention_layers` (a UNet) and :func:`mmdit_attention_layers` (an ``SD3Transformer2DModel``) do not
read the numbers off the config: they build the model from its config on the ``meta`` device (shapes only, no memory,
no arithmetic) and run one forward pass at the asked resolution with a hook on every diffusers ``Attention`` module,
recording what each one is really handed: query tokens N and key tokens M from its inputs, heads and head dimension
from the module. A layer is "cross" when it was given the text states (``encoder_hidden_states``) and uses them as
keys only, "joint" when it was given them and projects queries from the text too (``add_q_proj``: the text joins the
sequence, so queries and keys are both N + M tokens), "self" otherwise, whatever its name (``attn1`` / ``attn2``).

**Analytic costs,** per batch element and per layer: the attention matrix has ``heads × N_q × N_k`` entries (4 bytes
each in fp32, 2 in fp16; N_q = N_k = N + M for a joint layer); QKᵀ and AV each take ``2 × heads × N_q × N_k ×
head_dim`` FLOPs (a multiply-add counts 2; the softmax, the projections and the scaling are left out). Totals per
image and denoising step sum the layers and double for classifier-free guidance, which runs the conditional and
unconditional rows as a batch of two.

**Measured costs** live in ``experiments.attention_timing``: a joint layer's attention is one self-attention over the
N + M concatenated tokens once each stream is projected, so it is measured as such (same heads, head dimension and
(N + M)² matrix, ``AttnProcessor`` vs ``AttnProcessor2_0``, the kernel ``JointAttnProcessor2_0`` calls;
``tests/test_attention_cost.py`` checks the equivalence on a real joint layer). The plot and the tables are in
``experiments.attention_report``; the command line in ``scripts/tools/attention_cost.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from diffusers import SD3Transformer2DModel, UNet2DConditionModel

BYTES_PER_ELEMENT = {"fp32": 4, "fp16": 2}
CFG_BATCH = 2  # classifier-free guidance evaluates the conditional and unconditional rows together
KINDS = ("self", "cross", "joint")
# The fitted log–log slope of the largest matrix against the image tokens N each kind should show: joint's (N + M)²
# tends to N² once N ≫ M, and is flatter while the text is a large share of the sequence.
EXPECTED_SLOPE = {"self": "2", "cross": "1", "joint": "→ 2 as N ≫ M"}

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

# Stable Diffusion 3.5 Medium's MM-DiT, transformer/config.json of stabilityai/stable-diffusion-3.5-medium (the values
# that shape the model; read in independent public copies of the gated repo's config, which agree key for key, and in
# testing/tiny_sd3.py's layout notes): 24 blocks of 24 heads × 64 (width 1536), the first 13 with a second, image-only
# attention ("MMDiT-X"), QK RMS-norm, 2 × 2 patches of a 16-channel latent.
SD35_MEDIUM_TRANSFORMER_CONFIG: dict[str, Any] = dict(
    sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24, attention_head_dim=64,
    num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048,
    pos_embed_max_size=384, dual_attention_layers=tuple(range(13)), qk_norm="rms_norm",
)
SD35_VAE_SCALE = 8  # the SD3 VAE: four levels, 16 latent channels
# The joint sequence's text part: CLIP-L and CLIP-G's 77 positions (concatenated on the feature axis, so 77 tokens),
# then T5-XXL's 256 (StableDiffusion3Pipeline's default max_sequence_length).
SD35_TEXT_TOKENS = 77 + 256


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
    text_tokens: int = 0  # M inside a joint layer's N + M; 0 for self and cross

    @property
    def image_tokens(self) -> int:
        """N: the feature map's positions (a joint layer's query tokens less the text's)."""
        return self.query_tokens - self.text_tokens

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


def check_side(resolution: int, factor: int, what: str) -> int:
    """The model-space side for a ``resolution``-pixel image: ``resolution / factor``, which must be whole."""
    side = resolution // factor
    if side * factor != resolution or side < 1:
        raise ValueError(f"resolution {resolution} is not a multiple of {what} {factor}")
    return side


def record_attention(model: torch.nn.Module, resolution: int, forward: Callable[[], Any]) -> list[AttentionLayer]:
    """Run ``forward()`` with a hook on every diffusers ``Attention`` module of ``model`` and return one
    :class:`AttentionLayer` per call, in call order (kinds as the module docstring defines them)."""
    from diffusers.models.attention_processor import Attention

    found: list[AttentionLayer] = []

    def recorder(name: str, module: Attention):
        def hook(_module, args, kwargs, _output) -> None:
            hidden = args[0] if args else kwargs["hidden_states"]
            context = kwargs.get("encoder_hidden_states")
            if context is None and len(args) > 1:
                context = args[1]
            heads = int(module.heads)
            head_dim = module.to_q.out_features // heads
            image, width = int(hidden.shape[1]), int(hidden.shape[-1])
            if context is not None and getattr(module, "add_q_proj", None) is not None:
                text = int(context.shape[1])
                found.append(AttentionLayer(name=name, kind="joint", resolution=resolution, query_tokens=image + text,
                                            key_tokens=image + text, heads=heads, head_dim=head_dim, query_dim=width,
                                            key_dim=int(context.shape[-1]), text_tokens=text))
                return
            keys = hidden if context is None else context
            found.append(AttentionLayer(
                name=name, kind="self" if context is None else "cross", resolution=resolution, query_tokens=image,
                key_tokens=int(keys.shape[1]), heads=heads, head_dim=head_dim, query_dim=width,
                key_dim=int(keys.shape[-1])))

        return hook

    handles = [module.register_forward_hook(recorder(name, module), with_kwargs=True)
               for name, module in model.named_modules() if isinstance(module, Attention)]
    try:
        with torch.no_grad():
            forward()
    finally:
        for handle in handles:
            handle.remove()
    return found


def attention_layers(unet_config: Mapping[str, Any], resolution: int, vae_scale_factor: int,
                     text_tokens: int) -> list[AttentionLayer]:
    """Every attention layer of the UNet described by ``unet_config`` at a ``resolution``-pixel square image, in
    the order the forward pass calls them (walked on the meta device: see the module docstring)."""
    from diffusers import UNet2DConditionModel

    side = check_side(resolution, vae_scale_factor, "the VAE factor")
    config = {k: v for k, v in dict(unet_config).items() if not k.startswith("_")}
    with torch.device("meta"):
        unet: UNet2DConditionModel = UNet2DConditionModel.from_config(config)
    sample = torch.zeros(1, unet.config.in_channels, side, side, device="meta")
    text = torch.zeros(1, text_tokens, unet.config.cross_attention_dim, device="meta")
    return record_attention(unet, resolution, lambda: unet(sample, torch.tensor([1], device="meta"),
                                                           encoder_hidden_states=text))


def mmdit_factor(transformer_config: Mapping[str, Any], vae_scale_factor: int) -> int:
    """The image side must be a multiple of this: one transformer patch of latent cells (16 px for SD3)."""
    return vae_scale_factor * int(transformer_config["patch_size"])


def mmdit_max_side(transformer_config: Mapping[str, Any], vae_scale_factor: int) -> int | None:
    """The largest image side the positional embedding covers (``pos_embed_max_size`` patches; SD3.5 Medium: 384
    patches = 6144 px); None when the config sets no cap."""
    cap = transformer_config.get("pos_embed_max_size")
    return None if cap is None else int(cap) * mmdit_factor(transformer_config, vae_scale_factor)


def mmdit_attention_layers(transformer_config: Mapping[str, Any], resolution: int, vae_scale_factor: int,
                           text_tokens: int) -> list[AttentionLayer]:
    """Every attention layer of the ``SD3Transformer2DModel`` described by ``transformer_config`` at a
    ``resolution``-pixel square image with ``text_tokens`` text tokens (SD3.5: 77 CLIP + 256 T5), in call order:
    per block its joint attention, then (a dual-attention block) its image-only self-attention."""
    from diffusers import SD3Transformer2DModel

    check_side(resolution, mmdit_factor(transformer_config, vae_scale_factor), "the model's factor (VAE × patch)")
    largest = mmdit_max_side(transformer_config, vae_scale_factor)
    if largest is not None and resolution > largest:
        raise ValueError(f"resolution {resolution} is past the positional embedding's {largest} px "
                         f"(pos_embed_max_size {transformer_config['pos_embed_max_size']} patches)")
    config = {k: v for k, v in dict(transformer_config).items() if not k.startswith("_")}
    with torch.device("meta"):
        transformer: SD3Transformer2DModel = SD3Transformer2DModel.from_config(config)
    side = resolution // vae_scale_factor
    sample = torch.zeros(1, transformer.config.in_channels, side, side, device="meta")
    text = torch.zeros(1, text_tokens, transformer.config.joint_attention_dim, device="meta")
    pooled = torch.zeros(1, transformer.config.pooled_projection_dim, device="meta")
    return record_attention(transformer, resolution, lambda: transformer(
        hidden_states=sample, encoder_hidden_states=text, pooled_projections=pooled,
        timestep=torch.tensor([1.0], device="meta")))


def joint_matrix_bytes(transformer_config: Mapping[str, Any], resolution: int, vae_scale_factor: int = SD35_VAE_SCALE,
                       text_tokens: int = SD35_TEXT_TOKENS, precision: str = "fp16") -> dict[str, int]:
    """One joint-attention layer's (N + M)² matrix at a square ``resolution``, from the config's numbers alone (no
    model built): N = (resolution / (VAE factor × patch))² image tokens, M text tokens; bytes of one head's matrix,
    of the layer's (every head), and of the layer under CFG (batch 2), per ``precision``. The defaults are SD3.5
    Medium's (:data:`SD35_MEDIUM_TRANSFORMER_CONFIG`)."""
    if precision not in BYTES_PER_ELEMENT:
        raise ValueError(f"precision must be one of {', '.join(BYTES_PER_ELEMENT)}, got {precision!r}")
    side = check_side(resolution, mmdit_factor(transformer_config, vae_scale_factor), "the model's factor")
    image = side * side
    sequence = image + text_tokens
    head = sequence * sequence * BYTES_PER_ELEMENT[precision]
    layer = int(transformer_config["num_attention_heads"]) * head
    return {"resolution": resolution, "image_tokens": image, "text_tokens": text_tokens, "sequence": sequence,
            "heads": int(transformer_config["num_attention_heads"]), "precision_bytes": BYTES_PER_ELEMENT[precision],
            "one_head_bytes": head, "layer_bytes": layer, "layer_bytes_cfg": CFG_BATCH * layer}


def unet_attention_layers(unet: UNet2DConditionModel, resolutions: Sequence[int], vae_scale_factor: int,
                          text_tokens: int) -> list[AttentionLayer]:
    """:func:`attention_layers` for a loaded UNet (its config; its weights are not used) at several resolutions."""
    return [layer for r in resolutions for layer in attention_layers(unet.config, r, vae_scale_factor, text_tokens)]


def transformer_attention_layers(transformer: SD3Transformer2DModel, resolutions: Sequence[int],
                                 vae_scale_factor: int, text_tokens: int) -> list[AttentionLayer]:
    """:func:`mmdit_attention_layers` for a loaded MM-DiT (its config only) at several resolutions."""
    return [layer for r in resolutions
            for layer in mmdit_attention_layers(transformer.config, r, vae_scale_factor, text_tokens)]


def kinds_of(layers: Sequence[AttentionLayer]) -> tuple[str, ...]:
    """The kinds present, in :data:`KINDS` order (a UNet: self, cross; SD3.5: self, joint; the toy MM-DiT: joint)."""
    present = {layer.kind for layer in layers}
    return tuple(kind for kind in KINDS if kind in present)


# ---------------------------------------------------------------------- totals


def step_totals(layers: Sequence[AttentionLayer], batch: int = CFG_BATCH) -> dict[str, dict[str, Any]]:
    """Per resolution: summed matrix bytes and FLOPs per image (batch element) and per denoising step (``batch``
    rows: 2 under CFG), split by kind (those present: :func:`kinds_of`), and the largest single matrix (what must
    fit at once when materialised)."""
    out: dict[str, dict[str, Any]] = {}
    kinds = kinds_of(layers)
    for resolution in sorted({layer.resolution for layer in layers}):
        at = [layer for layer in layers if layer.resolution == resolution]
        row: dict[str, Any] = {"layers": len(at), "batch_per_step": batch}
        for kind in kinds:
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
        row["flops_per_step"] = sum(row[kind]["flops_per_step"] for kind in kinds)
        row["matrix_bytes_fp32_per_step"] = batch * sum(row[kind]["matrix_bytes_fp32_per_image"] for kind in kinds)
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
    """Per resolution (ascending): the largest layer's image tokens N, its matrix bytes (fp32, per batch element)
    and the resolution."""
    chosen = sorted((layer for (_, k), layer in largest_layers(layers).items() if k == kind),
                    key=lambda layer: layer.resolution)
    return ([layer.image_tokens for layer in chosen], [layer.matrix_bytes("fp32") for layer in chosen],
            [layer.resolution for layer in chosen])


def slopes(layers: Sequence[AttentionLayer]) -> dict[str, float | None]:
    """Fitted log–log slope of the largest matrix against the image tokens N per kind present: ≈ 2 for self, ≈ 1 for
    cross, below 2 for joint while the text is a large share of the N + M tokens (:data:`EXPECTED_SLOPE`)."""
    return {kind: fitted_slope(*kind_series(layers, kind)[:2]) for kind in kinds_of(layers)}


def would_not_fit(layers: Sequence[AttentionLayer], free_bytes: int, precision: str = "fp32",
                  batch: int = CFG_BATCH) -> set[tuple[int, str]]:
    """(resolution, kind) pairs whose largest layer, materialised for one CFG step, needs more than ``free_bytes``."""
    element = BYTES_PER_ELEMENT[precision]
    return {key for key, layer in largest_layers(layers).items()
            if materialised_peak_bytes(layer, element, batch) > free_bytes}


def is_close_ratio(ratio: float, expected: float, tolerance: float) -> bool:
    """``ratio`` within ``tolerance`` (a fraction) of ``expected``, compared in log space."""
    return abs(math.log(ratio / expected)) <= math.log1p(tolerance)


