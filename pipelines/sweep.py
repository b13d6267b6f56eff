"""Guidance sweep: scales × {CFG, Perp-CFG} at one seed, every cell one row of ONE batched trajectory set.

The cells share the noise (one generator per row, all seeded alike, so each row draws exactly
what a single run with that seed draws) and run through the one sampler loop together: the
rule below guides each row with its own scale and rule, so a sweep costs one loop, not N.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from guidance.rules import FORMULAS, Basis, Space, cfg, eps_to_x0, perp_cfg, rescale, x0_to_eps
from guidance.sampler import SampleResult, StepState
from models.denoisers import UNetDenoiser
from models.runtime import cpu_generator
from pipelines.text_to_image import SDComponents, generate, latent_shape, prompt_contexts, resolve_size, to_pil

SWEEP_RULES = ("cfg", "perp-cfg")
MAX_SWEEP_SCALES = 8


def parse_scales(text: str | list | tuple, low: float = 0.0, high: float = 30.0) -> list[float]:
    """``"1, 3, 7.5"`` (or a list) as floats, each finite and in range, at most MAX_SWEEP_SCALES of them."""
    parts = [p for p in str(text).replace(";", ",").split(",") if p.strip()] if isinstance(text, str) else list(text)
    if not parts:
        raise ValueError("scales must list at least one number, e.g. 1, 3, 7.5, 12, 20")
    if len(parts) > MAX_SWEEP_SCALES:
        raise ValueError(f"a sweep takes at most {MAX_SWEEP_SCALES} scales, got {len(parts)}")
    scales = []
    for p in parts:
        try:
            v = float(p)
        except (TypeError, ValueError):
            raise ValueError(f"scales must be numbers separated by commas; {str(p).strip()[:40]!r} is not") from None
        if not math.isfinite(v) or not low <= v <= high:
            raise ValueError(f"each scale must be between {low:g} and {high:g}, got {str(p).strip()[:40]!r}")
        scales.append(v)
    return scales


@dataclass(frozen=True)
class PerRowRule:
    """A guidance rule with a scale and a rule name per batch row (same interface as ``GuidanceRule``)."""

    names: tuple[str, ...]
    scales: tuple[float, ...]
    eta: float = 0.0
    basis: Basis = "uncond"
    rescale: float = 0.0
    space: Space = "eps"

    def __post_init__(self) -> None:
        if len(self.names) != len(self.scales):
            raise ValueError("PerRowRule needs one rule name per scale")
        unknown = set(self.names) - set(SWEEP_RULES)
        if unknown:
            raise ValueError(f"sweep rules must be among {SWEEP_RULES}, got {sorted(unknown)}")

    @property
    def needs_uncond(self) -> bool:
        return True

    @property
    def formula(self) -> str:
        text = "; ".join(f"{n}: {FORMULAS[n]}" for n in dict.fromkeys(self.names))
        return text + (f";  then {FORMULAS['rescale']}" if self.rescale else "")

    def apply(
        self,
        eps_uncond: Tensor | None,
        eps_cond: Tensor,
        x_t: Tensor | None = None,
        alpha_bar: Tensor | float | None = None,
    ) -> Tensor:
        if eps_uncond is None:
            raise ValueError("the sweep needs the unconditional prediction")
        if eps_cond.shape[0] != len(self.names):
            raise ValueError(f"batch of {eps_cond.shape[0]} rows for {len(self.names)} sweep cells")
        if self.space == "x0":
            u, c = eps_to_x0(eps_uncond, x_t, alpha_bar), eps_to_x0(eps_cond, x_t, alpha_bar)
        else:
            u, c = eps_uncond, eps_cond
        shape = (-1,) + (1,) * (c.ndim - 1)
        w = torch.tensor(self.scales, dtype=c.dtype, device=c.device).reshape(shape)
        perp_rows = torch.tensor([n == "perp-cfg" for n in self.names], device=c.device).reshape(shape)
        out = cfg(u, c, w)
        if perp_rows.any():
            out = torch.where(perp_rows, perp_cfg(u, c, w, eta=self.eta, basis=self.basis), out)
        if self.rescale:
            out = rescale(out, c, self.rescale)
        if self.space == "x0":
            out = x0_to_eps(out, x_t, alpha_bar)
        return out


@dataclass
class SweepResult:
    images: Tensor  # [len(rules) * len(scales), 3, H, W] in [0, 1], rule-major
    cells: list[tuple[str, float]]
    result: SampleResult
    truncated: list[str]


@torch.no_grad()
def guidance_sweep(
    sd: SDComponents,
    prompt: str,
    scales: list[float],
    *,
    negative_prompt: str = "",
    rules: tuple[str, ...] = SWEEP_RULES,
    eta: float = 0.0,
    basis: Basis = "uncond",
    rescale_phi: float = 0.0,
    steps: int = 25,
    width: int | None = None,
    height: int | None = None,
    seed: int = 0,
    scheduler: str = "ddim",
    callback: Callable[[StepState], None] | None = None,
    diagnostics: bool = True,
) -> SweepResult:
    """Every (rule, scale) cell from the same seed in one batched run of the sampler loop."""
    width, height = resolve_size(sd, width, height)
    cells = [(r, float(s)) for r in rules for s in scales]
    n = len(cells)
    cond, uncond, truncated = prompt_contexts(sd, prompt, negative_prompt, n)
    rule = PerRowRule(tuple(r for r, _ in cells), tuple(s for _, s in cells), eta, basis, rescale_phi)
    # One generator per row: each row's noise (initial and ancestral) equals a single run's at this seed.
    generators = [cpu_generator(seed) for _ in range(n)]
    images, result = generate(sd, UNetDenoiser(sd.unet, cond, uncond), rule, latent_shape(sd, width, height, n),
                              steps=steps, scheduler=scheduler, generator=generators, callback=callback,
                              diagnostics=diagnostics)
    return SweepResult(images, cells, result, truncated)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size only
        return ImageFont.load_default()


def sweep_grid(images: Tensor, cells: list[tuple[str, float]], cell_size: int | None = None) -> Image.Image:
    """A labelled grid: one row per rule, one column per scale."""
    rules = list(dict.fromkeys(r for r, _ in cells))
    scales = list(dict.fromkeys(s for _, s in cells))
    h, w = images.shape[-2:]
    # Tiny images are upscaled (nearest) so the labels stay readable next to them.
    zoom = max(1, (cell_size or 128) // max(h, w))
    ch, cw = h * zoom, w * zoom
    left, top, pad = 90, 24, 4
    grid = Image.new("RGB", (left + len(scales) * (cw + pad), top + len(rules) * (ch + pad)), "white")
    draw = ImageDraw.Draw(grid)
    font = _font(14)
    for j, s in enumerate(scales):
        draw.text((left + j * (cw + pad) + 4, 4), f"w = {s:g}", fill="black", font=font)
    for i, r in enumerate(rules):
        draw.text((4, top + i * (ch + pad) + ch // 2 - 7), r.upper(), fill="black", font=font)
    for k, (r, s) in enumerate(cells):
        i, j = rules.index(r), scales.index(s)
        tile = to_pil(images[k]).resize((cw, ch), Image.NEAREST)
        grid.paste(tile, (left + j * (cw + pad), top + i * (ch + pad)))
    return grid

