"""Guidance sweep: methods × scales at one seed, every cell one row of a batched trajectory set.

The cells share the noise (one generator per row, all seeded alike, so each row draws exactly
what a single run with that seed draws) and run through the one sampler loop together: the
rule below guides each row with its own scale and rule, so a sweep costs one loop, not N.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from guidance.rules import METHODS, SCALE, GuidanceRule, GuideStep, Rule, RunFacts, guide
from guidance.sampler import SampleResult, StepState
from guidance.settings import SamplingSettings, settings_from
from models.adapters.denoisers import UNetDenoiser
from models.loading.sd import SDComponents
from models.runtime import cpu_generator
from pipelines.text_to_image import (
    GenerationResult,
    generate,
    latent_shape,
    prompt_contexts,
    resolve_size,
    to_pil,
)

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel

SWEEP_RULES = ("cfg", "perp-cfg")
MAX_SWEEP_SCALES = 8


def parse_scales(text: str | list | tuple, low: float = SCALE.low, high: float = SCALE.high) -> list[float]:
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
            raise ValueError(f"scales must each be between {low:g} and {high:g}, got {str(p).strip()[:40]!r}")
        scales.append(v)
    return scales


MAX_SWEEP_METHODS = 6


def parse_methods(text: str | list | tuple) -> tuple[str, ...]:
    """``"cfg, apg"`` (or a list) as registry method names, each guiding (not ``none``), at most six, no repeats."""
    parts = [p.strip() for p in text.split(",") if p.strip()] if isinstance(text, str) else [str(p) for p in text]
    if not parts:
        raise ValueError("methods must list at least one guidance method, e.g. cfg, perp-cfg")
    if len(parts) > MAX_SWEEP_METHODS:
        raise ValueError(f"a sweep compares at most {MAX_SWEEP_METHODS} methods, got {len(parts)}")
    guiding = [name for name, method in METHODS.items() if method.needs_uncond]
    for name in parts:
        if name not in guiding:
            raise ValueError(f"methods must be among {', '.join(guiding)}; {name[:40]!r} is not")
    if len(set(parts)) != len(parts):
        raise ValueError("methods lists a method twice")
    return tuple(parts)


@dataclass(frozen=True)
class PerRowRule:
    """Registry rules with a scale and a rule name per batch row (the loop calls it like a ``GuidanceRule``).

    Rows that share a rule are guided together by ``guidance.rules.guide`` with a per-row scale tensor, so
    each row gets exactly what a single run with that rule and scale gets (a stateful rule keeps one state per
    rule group, which is per row for elementwise state such as APG's momentum). ``options`` (η, basis, rescale …)
    are validated by the registry like any rule's. All rows must evaluate the same branches.
    """

    names: tuple[str, ...]
    scales: tuple[float, ...]
    options: tuple[tuple[str, Any], ...] = ()
    space: str = "eps"

    def __post_init__(self) -> None:
        if len(self.names) != len(self.scales):
            raise ValueError("PerRowRule needs one rule name per scale")
        rules = [self.rule(name, scale) for name, scale in zip(self.names, self.scales, strict=True)]
        if len({r.branches_at(0, 1) for r in rules}) > 1 or not all(r.needs_uncond for r in rules):
            raise ValueError("rows of one batched sweep must evaluate the same model branches")

    @property
    def name(self) -> str:
        """The rules of the rows, as one name for messages ("cfg+cfg++")."""
        return "+".join(dict.fromkeys(self.names))

    def rule(self, name: str, scale: float) -> GuidanceRule:
        return GuidanceRule(name, scale, space=self.space, **dict(self.options))

    @property
    def _first(self) -> GuidanceRule:
        return self.rule(self.names[0], self.scales[0])

    @property
    def needs_uncond(self) -> bool:
        return True

    @property
    def uncond_branch(self) -> str:
        return self._first.uncond_branch

    @property
    def needs_ddim(self) -> bool:
        return any(METHODS[name].needs_ddim for name in self.names)

    def branches_at(self, index: int, num_steps: int) -> tuple[str, ...]:
        return self._first.branches_at(index, num_steps)

    @property
    def basis(self) -> str:
        return dict(self.options).get("basis", "uncond")

    def branch_options(self) -> dict[str, Any]:
        return self._first.branch_options()

    def scheduler_options(self) -> dict[str, Any]:
        return self._first.scheduler_options()

    def check(self, facts: RunFacts) -> None:
        for name, scale in dict(zip(self.names, self.scales, strict=True)).items():
            self.rule(name, scale).check(facts)

    @property
    def formula(self) -> str:
        first = dict(zip(self.names, self.scales, strict=True))
        return "; ".join(f"{name}: {self.rule(name, scale).formula}" for name, scale in first.items())

    def guide_step(self, predictions: Mapping[str, Tensor], x_t: Tensor, alpha_bar: Tensor, step: GuideStep,
                   state: dict) -> Tensor:
        """Each group of rows that shares a method guided together, with a per-row scale tensor."""
        eps_cond = predictions["cond"]
        if not self._first.active_at(step.index, step.num_steps):
            return eps_cond  # outside the guidance interval every row takes the conditional prediction alone
        eps_uncond = predictions.get(self.uncond_branch)
        if eps_uncond is None:
            raise ValueError("the sweep needs the unconditional prediction")
        if eps_cond.shape[0] != len(self.names):
            raise ValueError(f"batch of {eps_cond.shape[0]} rows for {len(self.names)} sweep cells")
        extra = {k: v for k, v in predictions.items() if k not in ("cond", self.uncond_branch)}
        out = torch.empty_like(eps_cond)
        shape = (-1,) + (1,) * (eps_cond.ndim - 1)
        for name in dict.fromkeys(self.names):
            rows = torch.tensor([n == name for n in self.names], device=eps_cond.device)
            scale = torch.tensor([s for n, s in zip(self.names, self.scales, strict=True) if n == name],
                                 dtype=eps_cond.dtype, device=eps_cond.device).reshape(shape)
            out[rows] = guide(eps_uncond[rows], eps_cond[rows], self.rule(name, 1.0), x_t=x_t[rows],
                              alpha_bar=alpha_bar, scale=scale, step=step, state=state.setdefault(name, {}),
                              extra={k: v[rows] for k, v in extra.items()})
        return out


@dataclass
class SweepResult:
    images: Tensor  # [len(rules) * len(scales), 3, H, W] in [0, 1], rule-major
    cells: list[tuple[str, float]]
    result: SampleResult
    truncated: list[str]


Draw = Callable[[Rule, SamplingSettings, list[torch.Generator]], GenerationResult]


@torch.no_grad()
def guidance_sweep(
    sd: SDComponents,
    prompt: str,
    scales: list[float],
    *,
    negative_prompt: str = "",
    rules: tuple[str, ...] = SWEEP_RULES,
    options: dict[str, Any] | None = None,
    settings: SamplingSettings | None = None,
    weak: UNet2DConditionModel | None = None,
    **sampling: Any,
) -> SweepResult:
    """A sweep on an SD-style model (:func:`sweep_cells` with the SD pipeline's sampling)."""
    def draw(rule: Rule, run_settings: SamplingSettings, generators: list[torch.Generator]) -> GenerationResult:
        n = run_settings.num_images
        cond, uncond, truncated = prompt_contexts(sd, prompt, negative_prompt, n)
        width, height = resolve_size(sd, run_settings.width, run_settings.height)
        images, result = generate(sd, UNetDenoiser(sd.unet, cond, uncond), rule, latent_shape(sd, width, height, n),
                                  run_settings, generator=generators, weak=weak)
        return GenerationResult(images, result, truncated)

    return sweep_cells(draw, scales, rules=rules, options=options, settings=settings_from(settings, sampling))


def sweep_cells(draw: Draw, scales: list[float], *, rules: tuple[str, ...], options: dict[str, Any] | None,
                settings: SamplingSettings) -> SweepResult:
    """Every (rule, scale) cell from the same seed: the rules that evaluate the same branches in one batched run
    of the sampler loop (autoguidance, whose u comes from another model, in a run of its own).

    ``draw(rule, settings, generators)`` samples ``settings.num_images`` rows of one prompt with a per-row rule on
    the model at hand (any pipeline whose denoiser runs per-row rules: the SD UNet, PixArt-Σ, a flow model).
    ``options`` are the rules' other parameters by registry name (``eta``, ``basis``, ``rescale`` …). ``result`` is
    the first run's trace.
    """
    cells = [(r, float(s)) for r in rules for s in scales]
    groups: dict[str, list[int]] = {}
    for k, (rule_name, _) in enumerate(cells):
        groups.setdefault(METHODS[rule_name].uncond_branch, []).append(k)
    images: Tensor | None = None
    results, truncated = [], []
    canvas: dict[str, Tensor] = {}  # every cell's latest preview, so a callback always sees the whole grid

    def whole_sweep(state: StepState, rows: list[int], run: int) -> None:
        # Runs follow one another: progress counts all of them, and cells of runs not started yet show black.
        if state.rgb is not None:
            grid = canvas.setdefault("rgb", torch.full((len(cells), *state.rgb.shape[1:]), -1.0,
                                                       dtype=state.rgb.dtype, device=state.rgb.device))
            grid[rows] = state.rgb
        settings.callback(replace(state, step_index=run * state.num_steps + state.step_index,
                                  num_steps=state.num_steps * len(groups), rgb=canvas.get("rgb")))

    for run, rows in enumerate(groups.values()):
        n = len(rows)
        rule = PerRowRule(tuple(cells[k][0] for k in rows), tuple(cells[k][1] for k in rows),
                          tuple((options or {}).items()))
        # One generator per row: each row's noise (initial and ancestral) equals a single run's at this seed.
        generators = [cpu_generator(settings.seed) for _ in range(n)]
        run_settings = settings.replace(
            num_images=n, callback=partial(whole_sweep, rows=rows, run=run) if settings.callback else None)
        out = draw(rule, run_settings, generators)
        if images is None:
            images = torch.empty((len(cells), *out.images.shape[1:]), dtype=out.images.dtype)
        images[rows] = out.images
        results.append(out.result)
        truncated = out.truncated
    return SweepResult(images, cells, results[0], truncated)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size only
        return ImageFont.load_default()


def sweep_grid(images: Tensor | list[Image.Image], cells: list[tuple[str, float]],
               cell_size: int | None = None) -> Image.Image:
    """A labelled grid: one row per rule, one column per scale (``images``: ``[cells, 3, H, W]`` in [0, 1], or
    one PIL image per cell, e.g. a preview)."""
    rules = list(dict.fromkeys(r for r, _ in cells))
    scales = list(dict.fromkeys(s for _, s in cells))
    tiles = [to_pil(image) for image in images] if isinstance(images, Tensor) else list(images)
    w, h = tiles[0].size
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
        tile = tiles[k].resize((cw, ch), Image.NEAREST)
        grid.paste(tile, (left + j * (cw + pad), top + i * (ch + pad)))
    return grid

