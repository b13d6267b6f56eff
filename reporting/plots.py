"""Figures shared by the tabs, rendered to PIL images (easy to show, return and save).

Figures are built with matplotlib's object-oriented ``Figure`` and drawn on an Agg canvas, never
through pyplot: pyplot keeps global state, and the playground plots while the GPU queue plots too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from guidance.sampler import SampleResult

if TYPE_CHECKING:
    from pipelines.classifier_guidance import ClassifierGuidanceResult


def subplots(
    ncols: int, figsize: tuple[float, float], margins: dict[str, float] | None = None, **gridspec
) -> tuple[Figure, np.ndarray]:
    """A one-row figure and its axes (``[ncols]``), like ``plt.subplots(1, ncols)`` without pyplot.

    ``margins`` (``subplots_adjust`` fractions) replace the constrained layout: its solver is about
    half of a small figure's drawing time, which matters for the plot every generation returns.
    """
    fig = Figure(figsize=figsize, dpi=100, layout=None if margins else "constrained")
    axes = fig.subplots(1, ncols, squeeze=False, gridspec_kw=gridspec or None)[0]
    if margins:
        fig.subplots_adjust(**margins)
    return fig, axes


def figure_to_image(fig: Figure) -> Image.Image:
    """The figure's pixels straight from the Agg canvas (a PNG round trip here would cost ~0.1 s per plot)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    width, height = canvas.get_width_height()
    return Image.frombuffer("RGBA", (width, height), canvas.buffer_rgba(), "raw", "RGBA", 0, 1).convert("RGB")


# Fixed margins for the per-request diagnostics figure (4.2 × 3.0 in per panel): room for the suptitle,
# the panel titles, tick labels and "step".
DIAGNOSTICS_MARGINS = {"left": 0.07, "right": 0.98, "bottom": 0.16, "top": 0.83, "wspace": 0.22}


def plot_diagnostics(result: SampleResult, title: str = "", measured_on: str = "") -> Image.Image:
    """Per-step ‖Δ∥‖ and ‖Δ⊥‖ (mean over the batch), and how saturated the predicted image is.

    ``measured_on`` says which image the saturation panels read (for latent models: the decoded preview).
    """
    keys = [row.keys() for row in result.trace]
    has = {k for ks in keys for k in ks}
    on = f"\n({measured_on})" if measured_on else ""
    panels = [p for p in (("delta", "‖Δ‖ split"), ("x0_saturation", f"pred. x̂0 outside [−1, 1]{on}"),
                          ("colour_saturation", f"colour saturation (mean HSV S){on}"),
                          ("log_prob", "log p(y | x_t)")) if p[0] in has or (p[0] == "delta" and "delta_par" in has)]
    fig, axes = subplots(max(len(panels), 1), (4.2 * max(len(panels), 1), 3.0), DIAGNOSTICS_MARGINS)
    steps = np.arange(len(result.trace))
    for ax, (key, label) in zip(axes, panels, strict=False):
        if key == "delta":
            ax.plot(steps, result.series("delta_par").mean(1), label="‖Δ∥‖ (along basis)")
            ax.plot(steps, result.series("delta_perp").mean(1), label="‖Δ⊥‖ (across)")
            ax.legend(fontsize=8)
        elif key == "log_prob":
            series = result.series(key)
            for b in range(series.shape[1]):
                ax.plot(steps, series[:, b], alpha=0.8)
        else:
            ax.plot(steps, result.series(key).mean(1))
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        # Tick labels are most of this figure's drawing time; a handful per axis reads as well.
        ax.xaxis.set_major_locator(MaxNLocator(5, integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(4))
    if title:
        fig.suptitle(title, fontsize=10)
    return figure_to_image(fig)


def plot_log_prob(result: ClassifierGuidanceResult, title: str = ""):
    """log p(y | x_t) over steps (left) and the guiding classifier's top-5 at the last step (right), as PIL."""
    runs = [r for r in (result.guided, result.clean) if r is not None]
    fig, axes = subplots(1 + len(runs), (4.6 * (1 + len(runs)), 3.2))
    ax = axes[0]
    colours = {"noise-aware": "tab:blue", "clean": "tab:orange"}
    for run in runs:
        steps = np.arange(len(run.timesteps))
        c = colours[run.guide]
        ax.plot(steps, run.noise_aware_log_prob.mean(1), color=c,
                label=f"{run.guide}-guided: noise-aware log p(y|x_t)")
        if run.guide == "clean":
            ax.plot(steps, run.log_prob.mean(1), color=c, ls="--",
                    label=f"clean-guided: {result.clean_label} log p(y|x̂₀)")
    ax.set_xlabel("step (noisy → clean)")
    ax.set_ylabel("log p(target), mean over images")
    ax.set_title(f"target: {result.params.get('class_name', '')}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    for ax, run in zip(axes[1:], runs, strict=True):
        ids, values = run.top5_ids[:, 0], run.top5_log_prob[:, 0]  # first image
        last = ids[-1]
        steps = np.arange(len(ids))
        for rank, cid in enumerate(last):
            # each of the final top-5 classes traced back over the steps where it was in the top-5
            hit = ids == cid
            series = np.where(hit.any(axis=1), np.where(hit, values, -np.inf).max(axis=1), np.nan)
            ax.plot(steps, series, marker=".", ms=3, label=f"{rank + 1}. {result.class_names[int(cid)][:22]}")
        ax.set_title(f"{run.guide}-guided: top-5 (image 1)", fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return figure_to_image(fig)
