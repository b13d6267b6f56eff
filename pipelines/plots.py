"""Figures shared by the tabs, rendered to PIL images (easy to show, return and save)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from guidance.sampler import SampleResult  # noqa: E402


def figure_to_image(fig) -> Image.Image:
    """The figure's pixels straight from the Agg canvas (a PNG round trip here would cost ~0.1 s per plot)."""
    fig.set_dpi(100)
    fig.set_layout_engine("constrained")
    fig.canvas.draw()
    width, height = fig.canvas.get_width_height()
    image = Image.frombuffer("RGBA", (width, height), fig.canvas.buffer_rgba(), "raw", "RGBA", 0, 1).convert("RGB")
    plt.close(fig)
    return image


def plot_diagnostics(result: SampleResult, title: str = "") -> Image.Image:
    """Per-step ‖Δ∥‖ and ‖Δ⊥‖ (mean over the batch) and the predicted-x0 saturation."""
    keys = [row.keys() for row in result.trace]
    has = {k for ks in keys for k in ks}
    panels = [p for p in (("delta", "‖Δ‖ split"), ("x0_saturation", "pred. x0 outside [−1, 1]"),
                          ("log_prob", "log p(y | x_t)")) if p[0] in has or (p[0] == "delta" and "delta_par" in has)]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(4.2 * max(len(panels), 1), 3.0), squeeze=False)
    steps = np.arange(len(result.trace))
    for ax, (key, label) in zip(axes[0], panels, strict=False):
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
    if title:
        fig.suptitle(title, fontsize=10)
    return figure_to_image(fig)
