"""The p_uncond question, measured: learned ε-networks of the 2D mixture against its exact scores.

One network per label-dropout probability p serves both CFG branches (``models.architectures.score_mlp``).
Two measurements:

- **branch errors**: E‖ε_θ(x_t, t, c) − ε*(x_t, t | c)‖² (conditional) and E‖ε_θ(x_t, t, ∅) − ε*(x_t, t)‖²
  (unconditional), per coordinate, over (x0, c) ~ p(x, c), t on an even grid of the 1000 training steps and
  x_t from the forward process. ε* is the exact minimiser of the training loss, so these are the excess losses.
  The reference ``label_effect`` = E‖ε*(x_t | c) − ε*(x_t)‖² is what CFG's direction Δ = ε_c − ε_u is made of:
  a branch whose error is comparable to it makes Δ mostly error.
- **CFG samples**: the playground's run (same loop, scheduler, noise) with the network in place of the exact
  ε, against the exact-guided run: class fraction and the energy distance between the two sample sets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from guidance.sampler import StepState
from models.architectures.gmm2d import GaussianMixture2D, default_mixture
from models.architectures.score_mlp import LearnedScoreDenoiser, ScoreMLP
from pipelines.playground import PlaygroundRun, energy_distance, make_scheduler, run_playground
from reporting.playground import draw_samples
from reporting.plots import figure_to_image, subplots

P_VALUES = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0)
SCALES = (1.0, 3.0, 7.0)
TRAINING_SEEDS = (0, 1, 2)  # three networks per p: differences between p must beat the seed-to-seed spread
ERROR_TIMESTEPS = 50  # t = 10, 30, …, 990: an even grid over the training range
ERROR_POINTS_PER_T = 400  # 20 000 (x0, c, ε) draws per network: seed-to-seed spread of the mean well under 5 %
ERROR_SEED = 12345  # the same draws for every network, so differences between networks are not draw noise


def training_alpha_bars() -> Tensor:
    """ᾱ_t of the playground's forward process (linear β, 1000 steps): what the networks were trained on."""
    return make_scheduler("ddpm").alphas_cumprod.double()


def error_timesteps(count: int = ERROR_TIMESTEPS, total: int = 1000) -> Tensor:
    """Midpoints of ``count`` equal bins of [0, total): an even grid over t."""
    return ((torch.arange(count) + 0.5) * total / count).long()


@dataclass
class BranchErrors:
    """Mean squared ε error per coordinate, per branch; ``by_t`` rows are the error at each of ``timesteps``."""

    cond: float
    uncond: float
    label_effect: float
    timesteps: np.ndarray
    cond_by_t: np.ndarray
    uncond_by_t: np.ndarray
    label_effect_by_t: np.ndarray

    def summary(self) -> dict[str, float]:
        return {"cond_error": round(self.cond, 5), "uncond_error": round(self.uncond, 5),
                "label_effect": round(self.label_effect, 5)}

    def by_range(self, edges: tuple[int, ...] = (0, 300, 700, 1000)) -> dict[str, dict[str, float]]:
        """The three means over each range of t (``"0-300"`` …): where along the schedule a branch is wrong."""
        out = {}
        for low, high in zip(edges[:-1], edges[1:], strict=True):
            rows = (self.timesteps >= low) & (self.timesteps < high)
            out[f"{low}-{high}"] = {"cond_error": round(float(self.cond_by_t[rows].mean()), 5),
                                    "uncond_error": round(float(self.uncond_by_t[rows].mean()), 5),
                                    "label_effect": round(float(self.label_effect_by_t[rows].mean()), 6)}
        return out


@torch.no_grad()
def branch_errors(net: ScoreMLP, mixture: GaussianMixture2D | None = None, *, points_per_t: int = ERROR_POINTS_PER_T,
                  timesteps: Tensor | None = None, seed: int = ERROR_SEED) -> BranchErrors:
    """Both branches of ``net`` against the exact ε on the same draws (see the module docstring)."""
    mixture = mixture or default_mixture()
    alpha_bars = training_alpha_bars()
    timesteps = error_timesteps() if timesteps is None else timesteps
    generator = torch.Generator().manual_seed(seed)
    null = net.config.null_label
    cond_t, uncond_t, effect_t = [], [], []
    for t in timesteps:
        a = alpha_bars[int(t)]
        x0, labels = mixture.sample_labelled(points_per_t, generator)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        exact_uncond = mixture.eps(x_t, a)
        exact_cond = torch.empty_like(x_t)
        for c in labels.unique():
            rows = labels == c
            exact_cond[rows] = mixture.eps(x_t[rows], a, int(c))
        t_rows = torch.full((points_per_t,), int(t))
        cond = net(x_t, t_rows, labels).double()
        uncond = net(x_t, t_rows, torch.full_like(labels, null)).double()
        cond_t.append((cond - exact_cond).pow(2).mean().item())
        uncond_t.append((uncond - exact_uncond).pow(2).mean().item())
        effect_t.append((exact_cond - exact_uncond).pow(2).mean().item())
    cond_np, uncond_np, effect_np = (np.asarray(v) for v in (cond_t, uncond_t, effect_t))
    return BranchErrors(float(cond_np.mean()), float(uncond_np.mean()), float(effect_np.mean()),
                        timesteps.numpy(), cond_np, uncond_np, effect_np)


@dataclass
class GuidedComparison:
    learned: PlaygroundRun
    exact: PlaygroundRun
    energy_distance: float  # between the learned-guided and the exact-guided samples

    def summary(self) -> dict[str, float]:
        return {"class_fraction": self.learned.stats["class_fraction"],
                "exact_class_fraction": self.exact.stats["class_fraction"],
                "energy_distance": round(self.energy_distance, 5)}


def guided_comparison(net: ScoreMLP, scale: float, *, target_class: str = "red", sampler: str = "ddpm",
                      steps: int = 200, num_samples: int = 1000, seed: int = 0,
                      callback: Callable[[StepState], None] | None = None, mixture: GaussianMixture2D | None = None,
                      exact: PlaygroundRun | None = None) -> GuidedComparison:
    """CFG at ``scale`` with ``net``'s two branches and with the exact ones, from the same noise through the
    playground's run (the one sampler loop). ``exact``: that exact run, already made with these settings (it is
    the same for every network, so an evaluation over many networks makes it once)."""
    mixture = mixture or default_mixture()
    denoiser = LearnedScoreDenoiser(net, mixture.class_index(target_class))
    common = dict(target_class=target_class, sampler=sampler, steps=steps, num_samples=num_samples, seed=seed,
                  mixture=mixture)
    learned = run_playground("cfg", scale, denoiser=denoiser, callback=callback, **common)
    exact = exact if exact is not None else run_playground("cfg", scale, **common)
    return GuidedComparison(learned, exact, energy_distance(learned.samples, exact.samples))


def exact_floor(scale: float, *, target_class: str = "red", sampler: str = "ddpm", steps: int = 200,
                num_samples: int = 1000, seed: int = 0, other_seed: int = 10_000) -> float:
    """Energy distance between two exact-guided runs from different noise: what finite samples alone give."""
    a = run_playground("cfg", scale, target_class=target_class, sampler=sampler, steps=steps,
                       num_samples=num_samples, seed=seed)
    b = run_playground("cfg", scale, target_class=target_class, sampler=sampler, steps=steps,
                       num_samples=num_samples, seed=other_seed)
    return energy_distance(a.samples, b.samples)


def view_extent(samples: Tensor, low: float = 4.0, high: float = 30.0) -> float:
    """Half-width of a square holding 99 % of the samples' coordinates (at least the mixture's ±4, at most ±30)."""
    finite = samples[torch.isfinite(samples).all(dim=1)].abs().flatten()
    reach = float(torch.quantile(finite, 0.99)) * 1.1 if finite.numel() else low
    return float(min(max(low, reach), high))


# Fixed margins (room for three-line titles and the t label): the constrained-layout solver doubled the drawing time.
PLOT_MARGINS = {"left": 0.04, "right": 0.99, "bottom": 0.1, "top": 0.84, "wspace": 0.18}


def plot_puncond(comparison: GuidedComparison, errors: BranchErrors, p_uncond: float, scale: float) -> Image.Image:
    """Learned-CFG samples beside the exact-CFG samples (same noise), and both branches' error over t."""
    fig, (ax_learned, ax_exact, ax_err) = subplots(3, (14, 4.6), PLOT_MARGINS, width_ratios=[1, 1, 1.1])
    mixture, label = comparison.exact.mixture, comparison.exact.label
    name = mixture.class_names[label]
    learned, exact = comparison.learned.stats, comparison.exact.stats
    # A badly trained branch throws samples far off the mixture (p = 0 or 1 at w = 7): both panels widen to show
    # where they went, up to a limit; the title counts any that still fall outside.
    extent = view_extent(torch.cat([comparison.learned.samples, comparison.exact.samples]))
    outside = int((comparison.learned.samples.abs() > extent).any(dim=1).sum())
    draw_samples(ax_learned, mixture, comparison.learned.samples, label, scale,
                 f"learned net, p_uncond={p_uncond:g}: CFG w={scale:g}, target {name!r}\n"
                 f"class fraction {learned['class_fraction']:.3f}, "
                 f"energy distance to exact {comparison.energy_distance:.3f}"
                 + (f"\n{outside} of {len(comparison.learned.samples)} samples outside this view" if outside else ""),
                 extent)
    draw_samples(ax_exact, mixture, comparison.exact.samples, label, scale,
                 f"exact scores: CFG w={scale:g} (same noise)\nclass fraction {exact['class_fraction']:.3f}", extent)
    ax_err.semilogy(errors.timesteps, errors.cond_by_t, label=f"conditional branch (mean {errors.cond:.3g})")
    ax_err.semilogy(errors.timesteps, errors.uncond_by_t, label=f"unconditional branch (mean {errors.uncond:.3g})")
    ax_err.semilogy(errors.timesteps, errors.label_effect_by_t, "k--", lw=1,
                    label=f"label effect ‖ε*(x|c) − ε*(x)‖² (mean {errors.label_effect:.3g})")
    ax_err.set_xlabel("t (training timestep)")
    ax_err.set_title("mean squared ε error per coordinate vs the exact scores", fontsize=9)
    ax_err.grid(alpha=0.3, which="both")
    ax_err.legend(fontsize=7)
    return figure_to_image(fig)
