"""A labelled 2D Gaussian mixture with closed-form noisy scores: exact guidance, no networks.

Under the variance-preserving forward process x_t = √ᾱ x0 + √(1−ᾱ) ε, a mixture
Σ_k π_k N(μ_k, s_k² I) stays a mixture: p_t(x) = Σ_k π_k N(x; √ᾱ μ_k, (ᾱ s_k² + 1 − ᾱ) I).
So the unconditional and class-conditional noise predictions and the classifier
log p_t(c | x) are exact, and samplers can be checked against the true p(x | c).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from guidance.sampler import ClassifierContext, ModelCall


@dataclass(frozen=True)
class GaussianMixture2D:
    means: Tensor  # [K, 2]
    stds: Tensor  # [K]
    weights: Tensor  # [K], summing to 1
    labels: Tensor  # [K] class index of each component
    class_names: tuple[str, ...]

    def class_index(self, name: str) -> int:
        if name not in self.class_names:
            raise ValueError(f"class must be one of {', '.join(self.class_names)}; got {name!r}")
        return self.class_names.index(name)

    def _component_log_densities(self, x: Tensor, alpha_bar: Tensor | float) -> Tensor:
        """log π_k N(x; √ᾱ μ_k, v_k I) for every row of x: [N, K]."""
        a = torch.as_tensor(alpha_bar, dtype=x.dtype)
        var = a * self.stds.to(x.dtype) ** 2 + (1 - a)
        diff = x[:, None, :] - a.sqrt() * self.means.to(x.dtype)[None]
        return (
            self.weights.to(x.dtype).log()[None]
            - 0.5 * (diff**2).sum(-1) / var[None]
            - torch.log(2 * math.pi * var)[None]
        )

    def log_density(self, x: Tensor, alpha_bar: Tensor | float = 1.0, label: int | None = None) -> Tensor:
        """log p_t(x), or log p_t(x, c) (joint, not normalised by p(c)) when ``label`` is given."""
        comp = self._component_log_densities(x, alpha_bar)
        if label is not None:
            comp = comp.masked_fill(self.labels[None] != label, -math.inf)
        return torch.logsumexp(comp, dim=1)

    def class_log_prob(self, x: Tensor, alpha_bar: Tensor | float, label: int) -> Tensor:
        """The exact noisy classifier: log p_t(c | x) = log p_t(x, c) − log p_t(x)."""
        return self.log_density(x, alpha_bar, label) - self.log_density(x, alpha_bar)

    def score(self, x: Tensor, alpha_bar: Tensor | float, label: int | None = None) -> Tensor:
        """∇ₓ log p_t(x) or ∇ₓ log p_t(x | c), in closed form (responsibility-weighted)."""
        a = torch.as_tensor(alpha_bar, dtype=x.dtype)
        comp = self._component_log_densities(x, a)
        if label is not None:
            comp = comp.masked_fill(self.labels[None] != label, -math.inf)
        resp = torch.softmax(comp, dim=1)  # [N, K]
        var = a * self.stds.to(x.dtype) ** 2 + (1 - a)
        per_comp = -(x[:, None, :] - a.sqrt() * self.means.to(x.dtype)[None]) / var[None, :, None]
        return (resp[..., None] * per_comp).sum(1)

    def eps(self, x: Tensor, alpha_bar: Tensor | float, label: int | None = None) -> Tensor:
        """The optimal noise prediction ε(x, t) = −√(1−ᾱ) ∇ₓ log p_t(x)."""
        a = torch.as_tensor(alpha_bar, dtype=x.dtype)
        return -(1 - a).sqrt() * self.score(x, a, label)

    def sample(self, n: int, generator: torch.Generator, label: int | None = None) -> Tensor:
        """Exact draws from p(x) or p(x | c) at t = 0."""
        w = self.weights.clone()
        if label is not None:
            w = torch.where(self.labels == label, w, torch.zeros_like(w))
        k = torch.multinomial(w / w.sum(), n, replacement=True, generator=generator)
        z = torch.randn(n, 2, generator=generator, dtype=self.means.dtype)
        return self.means[k] + self.stds[k, None] * z

    def sample_labelled(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Exact draws (x, c) from the joint p(x, c) at t = 0: training pairs for a conditional network."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, 2, generator=generator, dtype=self.means.dtype)
        return self.means[k] + self.stds[k, None] * z, self.labels[k]

    def nearest_component(self, x: Tensor) -> Tensor:
        """The most responsible component at t = 0, per point."""
        return self._component_log_densities(x, 1.0).argmax(dim=1)


def default_mixture() -> GaussianMixture2D:
    """Three overlapping classes on a ring: guidance has somewhere to push and something to lose."""
    angles = torch.arange(6, dtype=torch.float64) * (2 * math.pi / 6)
    means = torch.stack([2.0 * angles.cos(), 2.0 * angles.sin()], dim=1)
    means = torch.cat([means, torch.zeros(1, 2, dtype=torch.float64)])
    return GaussianMixture2D(
        means=means,
        stds=torch.tensor([0.45] * 6 + [0.7], dtype=torch.float64),
        weights=torch.tensor([1.0] * 6 + [1.5], dtype=torch.float64) / 7.5,
        labels=torch.tensor([0, 1, 2, 0, 1, 2, 1]),
        class_names=("red", "green", "blue"),
    )


def degraded(mixture: GaussianMixture2D, blur: float = 2.0) -> GaussianMixture2D:
    """The same mixture with every component ``blur`` times wider: a "bad version" of the model, as the
    autoguidance paper's 2D example uses a smaller, less trained network whose modes are too broad."""
    return GaussianMixture2D(mixture.means, mixture.stds * blur, mixture.weights, mixture.labels,
                             mixture.class_names)


class GMMDenoiser:
    """The mixture's exact ε for the sampler loop: unconditional rows, class-c rows and, for autoguidance,
    class-c rows of the ``weak`` (degraded) mixture."""

    def __init__(self, mixture: GaussianMixture2D, label: int, alpha_bars: Tensor,
                 weak: GaussianMixture2D | None = None):
        self.mixture, self.label, self.alpha_bars, self.weak = mixture, label, alpha_bars, weak

    def __call__(self, x: Tensor, t: Tensor, call: ModelCall) -> Tensor:
        a = self.alpha_bars[int(t)]
        outs = []
        for rows, branch in zip(x.chunk(len(call.branches)), call.branches, strict=True):
            if branch == "weak" and self.weak is not None:
                outs.append(self.weak.eps(rows, a, self.label))
            elif branch in ("uncond", "cond"):
                outs.append(self.mixture.eps(rows, a, None if branch == "uncond" else self.label))
            else:
                raise ValueError(f"the exact 2D mixture has no {branch!r} evaluation")
        return torch.cat(outs)


def exact_classifier(mixture: GaussianMixture2D, label: int, alpha_bars: Tensor):
    """log p_t(c | x_t) as a ``log_prob`` for :class:`guidance.sampler.ClassifierGuidance`."""

    def log_prob(x: Tensor, t: Tensor, ctx: ClassifierContext) -> Tensor:
        return mixture.class_log_prob(x, alpha_bars[int(t)], label)

    return log_prob
