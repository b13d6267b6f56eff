"""Figures shared by the tabs, rendered to PIL images (easy to show, return and save).

Figures are built with matplotlib's object-oriented ``Figure`` and drawn on an Agg canvas, never
through pyplot: pyplot keeps global state, and the playground plots while the GPU queue plots too.
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from guidance.sampler import SampleResult


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


def plot_diagnostics(result: SampleResult, title: str = "") -> Image.Image:
    """Per-step ‖Δ∥‖ and ‖Δ⊥‖ (mean over the batch) and the predicted-x0 saturation."""
    keys = [row.keys() for row in result.trace]
    has = {k for ks in keys for k in ks}
    panels = [p for p in (("delta", "‖Δ‖ split"), ("x0_saturation", "pred. x0 outside [−1, 1]"),
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
