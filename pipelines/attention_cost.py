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

**Measured costs** (:func:`measure_attention`): one fresh ``Attention`` module with the layer's dimensions and
random weights (the shared model is never touched), run once with diffusers' ``AttnProcessor`` (which stores the
score and probability matrices) and once with ``AttnProcessor2_0`` (``scaled_dot_product_attention``), batch 1,
on the runtime's device and dtype. Time is the median of a few calls after a warm-up. Peak memory is what the
call allocates above what existed before it:

- CUDA: ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``, minus the allocation before.
- CPU: torch has no peak counter for its CPU allocator, so the call runs once under the torch profiler with
  ``profile_memory=True``, which records every allocation and free of that allocator with a time stamp; summed in
  time order, the running total's maximum is the peak (:func:`models.runtime.peak_memory`, which the text-to-image
  tab's ``measure_memory`` uses too).

A measurement whose estimated peak (:func:`materialised_peak_bytes`) passes half the device's free memory, or on
the CPU more arithmetic than :data:`CPU_MAX_FLOPS`, is not attempted: the row keeps its analytic size and says
"not measured" and why.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from models.runtime import PEAK_MEMORY_METHOD, Runtime, peak_memory
from pipelines.plots import figure_to_image, subplots

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel

BYTES_PER_ELEMENT = {"fp32": 4, "fp16": 2}
CFG_BATCH = 2  # classifier-free guidance evaluates the conditional and unconditional rows together
FIT_FRACTION = 0.5  # a measurement may take at most this share of the device's free memory
CPU_MAX_FLOPS = 5e10  # ≈ a few seconds per call on one CPU thread; more is left to the analytic row
PROCESSORS = ("materialised", "sdpa")

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


@dataclass(frozen=True)
class Measurement:
    """One layer kind at one resolution through one processor (batch 1)."""

    resolution: int
    kind: str
    layer: str
    processor: str  # "materialised" (AttnProcessor) or "sdpa" (AttnProcessor2_0)
    measured: bool
    seconds: float | None = None
    peak_bytes: int | None = None
    estimated_peak_bytes: int = 0
    method: str = ""
    reason: str = ""  # why it was not measured


def free_memory_bytes(device: torch.device) -> int:
    """Memory a measurement could take now: CUDA's free memory, or the system's available RAM on the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def materialised_peak_bytes(layer: AttentionLayer, bytes_per_element: int, batch: int = 1) -> int:
    """What the materialised call holds at its worst: the score and probability matrices at once (diffusers'
    ``get_attention_scores`` allocates the scores, then the softmax output before freeing them) plus the
    projected queries, keys, values and the output."""
    matrices = 2 * layer.heads * layer.query_tokens * layer.key_tokens
    projections = layer.heads * layer.head_dim * (2 * layer.query_tokens + 2 * layer.key_tokens)
    return batch * (matrices + projections) * bytes_per_element


def attention_module(layer: AttentionLayer, runtime: Runtime, seed: int = 0):
    """A fresh diffusers ``Attention`` with the layer's dimensions, random weights, on the runtime's device."""
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(seed)
    module = Attention(query_dim=layer.query_dim, heads=layer.heads, dim_head=layer.head_dim,
                       cross_attention_dim=layer.key_dim if layer.kind == "cross" else None)
    return module.to(runtime.device, runtime.dtype).eval()


def layer_inputs(layer: AttentionLayer, runtime: Runtime, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    generator = torch.Generator("cpu").manual_seed(seed)
    hidden = torch.randn(1, layer.query_tokens, layer.query_dim, generator=generator)
    context = torch.randn(1, layer.key_tokens, layer.key_dim, generator=generator) if layer.kind == "cross" else None
    move = lambda t: None if t is None else t.to(runtime.device, runtime.dtype)  # noqa: E731
    return move(hidden), move(context)


def processor(name: str):
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    if name not in PROCESSORS:
        raise ValueError(f"processor must be one of {', '.join(PROCESSORS)}, got {name!r}")
    return AttnProcessor() if name == "materialised" else AttnProcessor2_0()


def run_attention(module, hidden: torch.Tensor, context: torch.Tensor | None, name: str) -> torch.Tensor:
    """The module's output through the named processor."""
    module.set_processor(processor(name))
    with torch.no_grad():
        return module(hidden, encoder_hidden_states=context)


def measure_attention(layer: AttentionLayer, runtime: Runtime, name: str, repeats: int = 3,
                      free_bytes: int | None = None, seed: int = 0) -> Measurement:
    """Time and peak memory of the layer's attention through processor ``name`` (module docstring: how); a call
    that would not fit, or would take too long on the CPU, comes back with ``measured=False`` and the reason."""
    element = torch.finfo(runtime.dtype).bits // 8
    estimate = materialised_peak_bytes(layer, element)
    base = dict(resolution=layer.resolution, kind=layer.kind, layer=layer.name, processor=name,
                estimated_peak_bytes=estimate)
    free = free_memory_bytes(runtime.device) if free_bytes is None else free_bytes
    if name == "materialised" and estimate > FIT_FRACTION * free:
        return Measurement(**base, measured=False, reason=f"not measured: needs ≈ {human_bytes(estimate)}, the "
                           f"{runtime.device.type} has {human_bytes(free)} free")
    flops = layer.qk_flops + layer.av_flops
    if runtime.device.type == "cpu" and flops > CPU_MAX_FLOPS:
        return Measurement(**base, measured=False, reason=f"not measured: {flops:.2e} FLOPs is past this CPU "
                           f"budget of {CPU_MAX_FLOPS:.0e}")
    module = attention_module(layer, runtime, seed)
    hidden, context = layer_inputs(layer, runtime, seed)
    module.set_processor(processor(name))

    def call() -> None:
        with torch.no_grad():
            module(hidden, encoder_hidden_states=context)

    cuda = runtime.device.type == "cuda"
    call()  # warm-up: kernels chosen, lazy buffers made
    times = []
    for _ in range(max(repeats, 1)):
        if cuda:
            torch.cuda.synchronize(runtime.device)
        start = time.perf_counter()
        call()
        if cuda:
            torch.cuda.synchronize(runtime.device)
        times.append(time.perf_counter() - start)
    _, peak = peak_memory(call, runtime.device)
    method = PEAK_MEMORY_METHOD["cuda" if cuda else "cpu"]
    return Measurement(**base, measured=True, seconds=statistics.median(times), peak_bytes=peak, method=method)


def measure_kinds(layers: Sequence[AttentionLayer], runtime: Runtime, repeats: int = 3,
                  free_bytes: int | None = None, on_each=None) -> list[Measurement]:
    """Both processors on the largest layer of each kind at each resolution; ``on_each()`` runs between them (a
    time-limit check, a progress tick)."""
    out = []
    for (_resolution, _kind), layer in sorted(largest_layers(layers).items()):
        for name in PROCESSORS:
            out.append(measure_attention(layer, runtime, name, repeats, free_bytes))
            if on_each is not None:
                on_each()
    return out


# ---------------------------------------------------------------------- presenting


def human_bytes(n: float) -> str:
    """Binary units (KiB, MiB, GiB): what allocators and device memory are counted in."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} TiB"


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


def plot_attention_cost(layers: Sequence[AttentionLayer], measurements: Sequence[Measurement] = (),
                        free_bytes: int | None = None, title: str = "") -> Image.Image:
    """Largest attention matrix per kind (fp32, one batch element) against query tokens N, log–log, with the fitted
    slopes; measured materialised peaks as open markers; the device's free memory as a line, and a red ×
    "would not fit" on every point whose materialised CFG step (batch 2) needs more than that."""
    fig, axes = subplots(1, (6.4, 4.2))
    ax = axes[0]
    colours = {"self": "tab:red", "cross": "tab:blue"}
    fitted = slopes(layers)
    by_kind = largest_layers(layers)
    for kind in ("self", "cross"):
        n, size, resolutions = kind_series(layers, kind)
        if not n:
            continue
        slope = fitted[kind]
        label = f"{kind}-attention matrix (slope {slope:.2f})" if slope is not None else f"{kind}-attention matrix"
        ax.plot(n, size, marker="o", color=colours[kind], label=label)
        for x, y, r in zip(n, size, resolutions, strict=True):
            ax.annotate(f"{r}²", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
        measured = [(by_kind[(m.resolution, kind)].query_tokens, m.peak_bytes) for m in measurements
                    if m.kind == kind and m.processor == "materialised" and m.measured and m.peak_bytes]
        if measured:
            ax.scatter(*zip(*measured, strict=True), facecolors="none", edgecolors=colours[kind], s=70,
                       label=f"{kind}: measured materialised peak")
        if free_bytes is not None:
            too_big = would_not_fit(layers, free_bytes)
            over = [(x, y) for x, y, r in zip(n, size, resolutions, strict=True) if (r, kind) in too_big]
            if over:
                ax.scatter(*zip(*over, strict=True), marker="x", color="red", s=120, zorder=5,
                           label="would not fit (materialised, CFG batch 2)")
    if free_bytes is not None:
        ax.axhline(free_bytes, color="grey", ls="--", lw=1)
        ax.annotate(f"device free: {human_bytes(free_bytes)}", (0.02, free_bytes), xycoords=("axes fraction", "data"),
                    textcoords="offset points", xytext=(0, 3), fontsize=7, color="grey")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("query tokens N (finest attention level)")
    ax.set_ylabel("bytes per batch element (fp32)")
    ax.grid(alpha=0.3, which="both")
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=7, loc="lower right")
    if title:
        ax.set_title(title, fontsize=9)
    return figure_to_image(fig)


def flops_text(flops: float) -> str:
    for unit, scale in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if flops >= scale:
            return f"{flops / scale:.3g} {unit}"
    return f"{flops:.0f} FLOP"


def layer_table(layers: Sequence[AttentionLayer]) -> str:
    """One Markdown row per attention layer and resolution."""
    head = ("| res | layer | kind | N | M | heads | head dim | matrix fp32 | matrix fp16 | QKᵀ | AV |\n"
            "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    rows = [f"| {x.resolution} | `{x.name}` | {x.kind} | {x.query_tokens} | "
            f"{x.key_tokens} | {x.heads} | {x.head_dim} | {human_bytes(x.matrix_bytes('fp32'))} | "
            f"{human_bytes(x.matrix_bytes('fp16'))} | {flops_text(x.qk_flops)} | {flops_text(x.av_flops)} |"
            for x in layers]
    return head + "\n".join(rows)


def totals_table(totals: Mapping[str, Mapping[str, Any]]) -> str:
    head = ("| res | kind | layers | Σ matrices fp32 / image | largest matrix fp32 | FLOPs / image | "
            "FLOPs / step (CFG ×2) |\n|---:|---|---:|---:|---:|---:|---:|\n")
    rows = []
    for resolution, row in totals.items():
        for kind in ("self", "cross"):
            k = row[kind]
            rows.append(f"| {resolution} | {kind} | {k['layers']} | {human_bytes(k['matrix_bytes_fp32_per_image'])} | "
                        f"{human_bytes(k['largest_matrix_bytes_fp32'])} | {flops_text(k['flops_per_image'])} | "
                        f"{flops_text(k['flops_per_step'])} |")
    return head + "\n".join(rows)


def measurement_table(measurements: Sequence[Measurement]) -> str:
    head = "| res | kind | layer | processor | time | peak memory | note |\n|---:|---|---|---|---:|---:|---|\n"
    rows = []
    for m in measurements:
        time_text = f"{m.seconds * 1e3:.2f} ms" if m.seconds is not None else "—"
        peak_text = human_bytes(m.peak_bytes) if m.peak_bytes is not None else "—"
        note = m.reason or ""
        rows.append(f"| {m.resolution} | {m.kind} | `{m.layer}` | "
                    f"{m.processor} | {time_text} | {peak_text} | {note} |")
    return head + "\n".join(rows)


def growth(measurements: Sequence[Measurement], kind: str, processor_name: str = "materialised") -> list[float]:
    """Ratios of consecutive measured peaks of one kind (ascending resolution)."""
    peaks = sorted((m.resolution, m.peak_bytes) for m in measurements
                   if m.kind == kind and m.processor == processor_name and m.measured and m.peak_bytes)
    return [b / a for (_, a), (_, b) in zip(peaks, peaks[1:], strict=False)]


def is_close_ratio(ratio: float, expected: float, tolerance: float) -> bool:
    """``ratio`` within ``tolerance`` (a fraction) of ``expected``, compared in log space."""
    return abs(math.log(ratio / expected)) <= math.log1p(tolerance)


def main(argv: Sequence[str] | None = None) -> None:
    """Print SD 1.5's analytic tables (from :data:`SD15_UNET_CONFIG`, no weights) at the given sides::

        python -m pipelines.attention_cost 512            # every layer and the totals
        python -m pipelines.attention_cost 256 512 1024   # plus the fitted slopes
    """
    import argparse

    parser = argparse.ArgumentParser(description="SD 1.5's attention layers and their analytic cost")
    parser.add_argument("resolutions", nargs="*", type=int, default=[512])
    args = parser.parse_args(argv)
    layers = [x for r in args.resolutions
              for x in attention_layers(SD15_UNET_CONFIG, r, SD15_VAE_SCALE, SD15_TEXT_TOKENS)]
    print(layer_table(layers), "", totals_table(step_totals(layers)), "", f"slopes: {slopes(layers)}", sep="\n")


if __name__ == "__main__":
    main()
