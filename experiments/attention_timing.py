"""Measured price of materialising attention: one fresh ``Attention`` module per layer kind, timed and its peak
memory taken, through diffusers' ``AttnProcessor`` (stores the matrices) and ``AttnProcessor2_0`` (SDPA).

How (see ``experiments.attention_cost`` for the layers themselves): batch 1, on the runtime's device and dtype; time is
the median of a few calls after a warm-up; peak memory is what the call allocates above what existed before it —
CUDA's ``max_memory_allocated`` after ``reset_peak_memory_stats``, and on the CPU the torch profiler's allocator
events summed in time order (``models.runtime.peak_memory``). A call whose estimated peak passes half the device's
free memory, or on the CPU more arithmetic than :data:`CPU_MAX_FLOPS`, is not attempted: the row says why.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from experiments.attention_cost import AttentionLayer, largest_layers, materialised_peak_bytes
from models.runtime import PEAK_MEMORY_METHOD, Runtime, peak_memory
from pipelines.attention import PROCESSORS, processor
from reporting.formats import human_bytes

FIT_FRACTION = 0.5  # a measurement may take at most this share of the device's free memory
CPU_MAX_FLOPS = 5e10  # ≈ a few seconds per call on one CPU thread; more is left to the analytic row


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


def growth(measurements: Sequence[Measurement], kind: str, processor_name: str = "materialised") -> list[float]:
    """Ratios of consecutive measured peaks of one kind (ascending resolution)."""
    peaks = sorted((m.resolution, m.peak_bytes) for m in measurements
                   if m.kind == kind and m.processor == processor_name and m.measured and m.peak_bytes)
    return [b / a for (_, a), (_, b) in zip(peaks, peaks[1:], strict=False)]
