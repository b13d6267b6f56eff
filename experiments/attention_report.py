"""Attention cost presented: the log–log plot of matrix size against tokens, and the Markdown tables of layers,
totals and measurements."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from experiments.attention_cost import (
    KINDS,
    AttentionLayer,
    kind_series,
    kinds_of,
    largest_layers,
    slopes,
    would_not_fit,
)
from experiments.attention_timing import Measurement
from reporting.formats import flops_text, human_bytes
from reporting.plots import figure_to_image, subplots


def plot_attention_cost(layers: Sequence[AttentionLayer], measurements: Sequence[Measurement] = (),
                        free_bytes: int | None = None, title: str = "") -> Image.Image:
    """Largest attention matrix per kind (fp32, one batch element) against image tokens N, log–log, with the fitted
    slopes (a joint layer's (N + M)² matrix at its N); measured materialised peaks as open markers; the device's free
    memory as a line, and a red × "would not fit" on every point whose materialised CFG step (batch 2) needs more
    than that."""
    fig, axes = subplots(1, (6.4, 4.2))
    ax = axes[0]
    colours = {"self": "tab:red", "cross": "tab:blue", "joint": "tab:purple"}
    fitted = slopes(layers)
    by_kind = largest_layers(layers)
    for kind in kinds_of(layers):
        n, size, resolutions = kind_series(layers, kind)
        if not n:
            continue
        slope = fitted[kind]
        label = f"{kind}-attention matrix (slope {slope:.2f})" if slope is not None else f"{kind}-attention matrix"
        ax.plot(n, size, marker="o", color=colours[kind], label=label)
        for x, y, r in zip(n, size, resolutions, strict=True):
            ax.annotate(f"{r}²", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
        measured = [(by_kind[(m.resolution, kind)].image_tokens, m.peak_bytes) for m in measurements
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
    ax.set_xlabel("image tokens N (finest attention level)")
    ax.set_ylabel("bytes per batch element (fp32)")
    ax.grid(alpha=0.3, which="both")
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=7, loc="lower right")
    if title:
        ax.set_title(title, fontsize=9)
    return figure_to_image(fig)


def tokens_text(layer: AttentionLayer, side: str) -> str:
    """A layer's query or key count: N + M spelled out for a joint layer, where both are the whole sequence."""
    count = layer.query_tokens if side == "query" else layer.key_tokens
    return f"{layer.image_tokens}+{layer.text_tokens}" if layer.kind == "joint" else str(count)


def layer_table(layers: Sequence[AttentionLayer]) -> str:
    """One Markdown row per attention layer and resolution (queries × keys: N × N self, N × M cross, (N+M) × (N+M)
    joint)."""
    head = ("| res | layer | kind | queries | keys | heads | head dim | matrix fp32 | matrix fp16 | QKᵀ | AV |\n"
            "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    rows = [f"| {x.resolution} | `{x.name}` | {x.kind} | {tokens_text(x, 'query')} | "
            f"{tokens_text(x, 'key')} | {x.heads} | {x.head_dim} | {human_bytes(x.matrix_bytes('fp32'))} | "
            f"{human_bytes(x.matrix_bytes('fp16'))} | {flops_text(x.qk_flops)} | {flops_text(x.av_flops)} |"
            for x in layers]
    return head + "\n".join(rows)


def totals_table(totals: Mapping[str, Mapping[str, Any]]) -> str:
    head = ("| res | kind | layers | Σ matrices fp32 / image | largest matrix fp32 | FLOPs / image | "
            "FLOPs / step (CFG ×2) |\n|---:|---|---:|---:|---:|---:|---:|\n")
    rows = []
    for resolution, row in totals.items():
        for kind in (kind for kind in KINDS if kind in row):
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
