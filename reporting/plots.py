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


def log_prob_frames(result: ClassifierGuidanceResult) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Classifier guidance as two tables for native plots: log p(target) per step of each guided run (and the clean
    guide's own log p(y | x̂0)), and, for the first image, the log-probabilities of the guiding classifier's final
    top-5 classes over the steps where each was in its top-5."""
    runs = [r for r in (result.guided, result.clean) if r is not None]
    target, top5 = [], []
    for run in runs:
        for step, values in enumerate(run.noise_aware_log_prob):
            target.append((step, float(np.mean(values)), f"{run.guide}-guided: noise-aware log p(y | x_t)"))
        if run.guide == "clean":
            target += [(step, float(np.mean(v)), f"clean-guided: {result.clean_label} log p(y | x̂0)")
                       for step, v in enumerate(run.log_prob)]
        ids, values = run.top5_ids[:, 0], run.top5_log_prob[:, 0]
        for rank, class_id in enumerate(ids[-1]):
            name = f"{run.guide}-guided, top {rank + 1}: {result.class_names[int(class_id)][:28]}"
            for step in range(len(ids)):
                hit = ids[step] == class_id
                if hit.any():
                    top5.append((step, float(values[step][hit].max()), name))
    columns = ["step", "value", "series"]
    return pd.DataFrame(target, columns=columns), pd.DataFrame(top5, columns=columns)
