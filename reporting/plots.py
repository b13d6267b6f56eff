"""Figures shared by the tabs, rendered to PIL images (easy to show, return and save).

Figures are built with matplotlib's object-oriented ``Figure`` and drawn on an Agg canvas, never
through pyplot: pyplot keeps global state, and the playground plots while the GPU queue plots too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
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


GUIDANCE_SERIES = {"delta_par": "‖Δ∥‖ (along the basis)", "delta_perp": "‖Δ⊥‖ (across)",
                   "log_prob": "log p(y | x_t)"}
SATURATION_SERIES = {"x0_saturation": "x̂0 outside [−1, 1]", "colour_saturation": "colour saturation (mean HSV S)"}


def series_frame(result: SampleResult, series: dict[str, str], scale: float = 1.0) -> pd.DataFrame:
    """The trace's ``series`` (key → name), mean over the batch, per step, as a long table (step, value, series) for
    a native plot; steps that did not record a series (outside the guidance interval) have no row."""
    rows = []
    for key, name in series.items():
        values = result.series(key)
        if values.size == 0:
            continue
        mean = np.nanmean(np.where(np.isnan(values).all(axis=1, keepdims=True), 0.0, values), axis=1)
        recorded = ~np.isnan(values).all(axis=1)
        rows += [(int(step), float(v) * scale, name) for step, v, ok in zip(range(len(mean)), mean, recorded,
                                                                          strict=True) if ok]
    return pd.DataFrame(rows, columns=["step", "value", "series"])


def diagnostics_frames(result: SampleResult, measured_on: str = "") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-step diagnostics as two tables for native plots: the guidance direction (‖Δ∥‖, ‖Δ⊥‖ and, under
    classifier guidance, log p(y | x_t)), and how saturated the predicted image is, in % (``measured_on`` names the
    image the saturation is read on: for latent models, the decoded preview)."""
    on = f" ({measured_on})" if measured_on else ""
    saturation = {key: f"{name}, %{on}" for key, name in SATURATION_SERIES.items()}
    return series_frame(result, GUIDANCE_SERIES), series_frame(result, saturation, scale=100.0)


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
