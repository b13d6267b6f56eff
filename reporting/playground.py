"""The 2D playground's figure: samples over the sharpened target's contours, and the per-step guidance norms."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.axes import Axes
from PIL import Image

from models.architectures.gmm2d import GaussianMixture2D
from pipelines.playground import PlaygroundRun
from reporting.plots import figure_to_image, subplots


def plot_playground(run: PlaygroundRun, guidance: str, scale: float) -> Image.Image:
    """Samples over the contours of the sharpened target p(x) p(c | x)^w at t = 0, and the Δ norms."""
    fig, (ax, ax2) = subplots(2, (10, 4.4), width_ratios=[1.15, 1])
    w = 1.0 if guidance == "none" else float(scale)
    name = run.mixture.class_names[run.label]
    draw_samples(ax, run.mixture, run.samples, run.label, w,
                 f"{guidance} w={scale:g}, target {name!r}: contours of p(x) p(c|x)^{w:g}")
    steps = np.arange(len(run.result.trace))
    if run.result.trace and "delta_par" in run.result.trace[0]:
        ax2.plot(steps, run.result.series("delta_par").mean(1), label="‖Δ∥‖ (along basis)")
        ax2.plot(steps, run.result.series("delta_perp").mean(1), label="‖Δ⊥‖ (across)")
        ax2.set_title("guidance direction Δ = c − u per step (mean over samples)", fontsize=9)
    elif run.result.trace and "log_prob" in run.result.trace[0]:
        ax2.plot(steps, run.result.series("log_prob").mean(1), label="mean log p_t(c | x_t)")
        ax2.set_title("exact classifier log-probability per step", fontsize=9)
    ax2.set_xlabel("step")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    return figure_to_image(fig)


def draw_samples(ax: Axes, mixture: GaussianMixture2D, samples: torch.Tensor, label: int, w: float,
                 title: str, extent: float = 4.0) -> None:
    """Samples coloured by the class of their nearest component, over the contours of p(x) p(c | x)^w at t = 0,
    in the square [−extent, extent]²."""
    grid = torch.linspace(-extent, extent, 160, dtype=torch.float64)
    gx, gy = torch.meshgrid(grid, grid, indexing="xy")
    pts = torch.stack([gx.flatten(), gy.flatten()], 1)
    log_target = mixture.log_density(pts) + w * mixture.class_log_prob(pts, 1.0, label)
    z = (log_target - log_target.max()).exp().reshape(gx.shape).numpy()
    ax.contourf(gx.numpy(), gy.numpy(), z, levels=12, cmap="Greys")
    colours = np.array(["#d62728", "#2ca02c", "#1f77b4"])
    cls = mixture.labels[mixture.nearest_component(samples)].numpy()
    pts_np = samples.numpy()
    ax.scatter(pts_np[:, 0], pts_np[:, 1], s=3, c=colours[cls % 3], alpha=0.6)
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
