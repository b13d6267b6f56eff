"""Attention binding, summarised: per word and sample the shares and the bound/not-bound decisions, their accuracy
with a 95 % interval, the figures (maps with the masks outlined, shares over steps and layers) and the tables.

Works on one run (the tab) or many (``scripts/eval/binding.py``): both go through :func:`word_samples`.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
from matplotlib.ticker import MaxNLocator
from PIL import Image

from experiments.attention_binding import REGIONS, BindingRun
from reporting.plots import figure_to_image, subplots

KINDS = ("colour", "shape")
Z95 = 1.959964


@dataclass(frozen=True)
class WordSample:
    """One word of one sample. ``shares``: own, other, background over all steps and layers; ``step_shares``
    ``[steps, 3]`` and ``layer_shares`` ``[layers, 3]``. ``bound`` is None when either object has no mask."""

    prompt: str
    sample: int
    word: str
    kind: str
    mass: float  # the word's share of all cross-attention, mean over steps and layers
    step_mass: np.ndarray  # [steps]: that share per step (mean over layers)
    layer_mass: np.ndarray  # [layers]: per layer (mean over steps)
    shares: np.ndarray
    step_shares: np.ndarray
    layer_shares: np.ndarray
    sources: tuple[str, ...]  # own object's mask source, then the other's
    bound: bool | None
    step_bound: np.ndarray | None
    layer_bound: np.ndarray | None
    own_larger: bool | None  # the area baseline: would a uniform map count as bound?
    layout_agrees: bool | None


def _shares(mass: np.ndarray) -> np.ndarray:
    total = mass.sum(axis=-1, keepdims=True)
    return np.divide(mass, total, out=np.zeros_like(mass), where=total > 0)


def word_samples(run: BindingRun) -> list[WordSample]:
    """Every (sample, word) of a run with its shares and decisions."""
    out = []
    steps, layers, batch, count, _ = run.mass.shape
    for b in range(batch):
        for i, word in enumerate(run.words):
            mass = run.mass[:, :, b, i]  # [S, L, 3]
            sources, bound, step_bound, layer_bound, own_larger, agrees = ("none",), None, None, None, None, None
            if run.masks is not None:
                own, others = word.obj, [k for k in range(len(run.objects)) if k != word.obj]
                sources = (run.masks.sources[b][own], *(run.masks.sources[b][k] for k in others))
                agrees = run.masks.layout_agrees[b][own]
                if others and "none" not in sources:
                    bound = bool(mass[..., 0].sum() > mass[..., 1].sum())
                    step_bound = mass[..., 0].sum(axis=1) > mass[..., 1].sum(axis=1)
                    layer_bound = mass[..., 0].sum(axis=0) > mass[..., 1].sum(axis=0)
                    areas = run.masks.masks[b].reshape(len(run.objects), -1).sum(axis=1)
                    own_larger = bool(areas[own] > areas[others].sum())
            total = mass.sum(axis=-1)
            out.append(WordSample(run.prompt, b, word.word, word.kind, float(total.mean()), total.mean(axis=1),
                                  total.mean(axis=0),
                                  _shares(mass.sum(axis=(0, 1))), _shares(mass.sum(axis=1)), _shares(mass.sum(axis=0)),
                                  sources, bound, step_bound, layer_bound, own_larger, agrees))
    return out


def wilson_interval(hits: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (honest at 0 and 1, where the normal one collapses)."""
    if n == 0:
        return (math.nan, math.nan)
    p = hits / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return ((centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n))


def summarise(samples: list[WordSample]) -> dict:
    """Per word kind and overall: the binding accuracy (hits, n, interval), the area baseline, mean shares, accuracy
    per step and per layer; mask sources and the colour-vs-layout cross-check."""
    summary: dict = {}
    for kind in (*KINDS, "all"):
        chosen = [s for s in samples if kind == "all" or s.kind == kind]
        masked = [s for s in chosen if s.sources[0] != "none"]
        decided = [s for s in masked if s.bound is not None]
        hits = sum(s.bound for s in decided)
        entry = {"words": len(chosen), "n": len(decided), "bound": hits,
                 "accuracy": hits / len(decided) if decided else None,
                 "interval": wilson_interval(hits, len(decided)) if decided else None,
                 "area_baseline": (sum(s.own_larger for s in decided) / len(decided)) if decided else None,
                 "shares": dict(zip(REGIONS, np.mean([s.shares for s in masked], axis=0).tolist(), strict=True))
                 if masked else None,
                 "mass": float(np.mean([s.mass for s in chosen])) if chosen else None}
        if decided:
            entry["accuracy_by_step"] = np.mean([s.step_bound for s in decided], axis=0).tolist()
            entry["accuracy_by_layer"] = np.mean([s.layer_bound for s in decided], axis=0).tolist()
        summary[kind] = entry
    objects = {(s.prompt, s.sample, s.sources[0], s.layout_agrees) for s in samples if s.kind == "colour"}
    checked = [a for *_, a in objects if a is not None]
    summary["mask_sources"] = dict(Counter(s.sources[0] for s in samples if s.kind == "colour"))
    summary["layout_agrees"] = {"agree": sum(checked), "checked": len(checked)}
    return summary


def percent(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.0f} %"


def words_table(samples: list[WordSample], has_masks: bool) -> str:
    """One row per word of the prompt (mean over the samples)."""
    rows = {}
    for s in samples:
        rows.setdefault(s.word + "\0" + s.kind, []).append(s)
    if not has_masks:
        lines = ["| word | kind | share of all cross-attention (mean over steps, layers, samples) |", "|---|---|---|"]
        lines += [f"| {group[0].word} | {group[0].kind} | {percent(float(np.mean([s.mass for s in group])))} |"
                  for group in rows.values()]
        return "\n".join(lines)
    lines = ["| word | kind | own object | other object | background | bound (own > other) | uniform map "
             "would be | own mask from |", "|---|---|---|---|---|---|---|---|"]
    for group in rows.values():
        masked = [s for s in group if s.sources[0] != "none"]
        shares = np.mean([s.shares for s in masked], axis=0) if masked else [None] * len(REGIONS)
        decided = [s for s in group if s.bound is not None]
        bound = f"{sum(s.bound for s in decided)}/{len(decided)}" if decided else "– (needs two masks)"
        baseline = f"{sum(s.own_larger for s in decided)}/{len(decided)}" if decided else "–"
        sources = ", ".join(f"{k} {v}" for k, v in Counter(s.sources[0] for s in group).items())
        lines.append(f"| {group[0].word} | {group[0].kind} | {percent(shares[0])} | {percent(shares[1])} | "
                     f"{percent(shares[2])} | {bound} | {baseline} | {sources} |")
    return "\n".join(lines)


def accuracy_table(summary: dict) -> str:
    lines = ["| words | binding accuracy | 95 % interval | n (word × sample) | uniform-map baseline |",
             "|---|---|---|---|---|"]
    for kind in (*KINDS, "all"):
        e = summary[kind]
        interval = f"{percent(e['interval'][0])} – {percent(e['interval'][1])}" if e["interval"] else "–"
        lines.append(f"| {kind} | {percent(e['accuracy'])} | {interval} | {e['n']} | {percent(e['area_baseline'])} |")
    return "\n".join(lines)


def plain_text(text: str, limit: int = 140) -> str:
    """A title as typed: shortened, and "$" escaped so matplotlib never reads a prompt as mathtext."""
    text = " ".join(text.split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("$", r"\$")


def plot_shares(samples: list[WordSample], layers: list[str], title: str) -> Image.Image:
    """Shares over steps and per layer (and the accuracy per step when masks exist); without masks, each word's share
    of all cross-attention."""
    masked = [s for s in samples if s.sources[0] != "none"]
    decided = [s for s in masked if s.bound is not None]
    fig, axes = subplots(3 if masked else 2, (13 if masked else 9, 3.4))
    steps = np.arange(1, samples[0].step_shares.shape[0] + 1)
    if masked:
        styles = {"colour": "-", "shape": "--"}
        colours = dict(zip(REGIONS, ("tab:green", "tab:red", "tab:grey"), strict=True))
        width = 0.8 / (2 * len(REGIONS))
        for offset, kind in enumerate(KINDS):
            group = [s for s in masked if s.kind == kind]
            if not group:
                continue
            by_step = np.mean([s.step_shares for s in group], axis=0)
            by_layer = np.mean([s.layer_shares for s in group], axis=0)
            for r, region in enumerate(REGIONS):
                axes[0].plot(steps, by_step[:, r], styles[kind], color=colours[region], label=f"{kind}: {region}")
                x = np.arange(len(layers)) + (offset * len(REGIONS) + r - len(REGIONS) + 0.5) * width
                axes[1].bar(x, by_layer[:, r], width, color=colours[region], alpha=1.0 if kind == "colour" else 0.5,
                            label=f"{kind}: {region}")
            bound = [s.step_bound for s in decided if s.kind == kind]
            if bound:
                axes[2].plot(steps, np.mean(bound, axis=0), styles[kind], color="tab:blue", label=f"{kind} words")
        if decided:
            axes[2].axhline(np.mean([s.own_larger for s in decided]), color="tab:grey", lw=1, ls=":",
                            label="uniform map")
            axes[2].legend(fontsize=7)
        else:
            axes[2].text(0.5, 0.5, "binding needs two objects\nwith masks in one sample", ha="center", va="center",
                         transform=axes[2].transAxes)
        axes[2].set(title="bound (own > other) per step", xlabel="denoising step", ylim=(-0.02, 1.02))
        axes[0].set(title="share of the word's attention", xlabel="denoising step", ylim=(0, 1))
        axes[1].set(title="share per layer (colour solid, shape faded)", ylim=(0, 1))
    else:
        names = list(dict.fromkeys(s.word for s in samples))
        for name in names:
            group = [s for s in samples if s.word == name]
            axes[0].plot(steps, np.mean([s.step_mass for s in group], axis=0), label=name)
        for index, name in enumerate(names):
            group = [s for s in samples if s.word == name]
            x = np.arange(len(layers)) + (index - len(names) / 2 + 0.5) * 0.8 / len(names)
            axes[1].bar(x, np.mean([s.layer_mass for s in group], axis=0), 0.8 / len(names), label=name)
        axes[0].set(title="word's share of all cross-attention", xlabel="denoising step")
        axes[1].set(title="per layer")
    axes[0].legend(fontsize=7)
    for axis in axes[::2]:
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1].set_xticks(np.arange(len(layers)), layers, rotation=30, fontsize=8)
    fig.suptitle(plain_text(title), fontsize=10)
    return figure_to_image(fig)


def plot_maps(run: BindingRun, sample: int, samples: list[WordSample]) -> Image.Image:
    """One sample and each word's map (mean over steps and layers), the own object's mask outlined in white and the
    other object's dashed; titles give the word's shares."""
    count = len(run.words)
    fig, axes = subplots(count + 1, (2.1 * (count + 1), 2.5))
    height, width = run.images.shape[1:3]
    axes[0].imshow(run.images[sample], interpolation="nearest")
    axes[0].set_title(f"sample {sample}", fontsize=9)
    mine = [s for s in samples if s.sample == sample]
    for i, (word, axis) in enumerate(zip(run.words, axes[1:], strict=True)):
        heat = run.maps[sample, i].numpy()
        axis.imshow(run.images[sample], interpolation="nearest")
        axis.imshow(heat, cmap="jet", alpha=0.55, interpolation="bilinear", extent=(-0.5, width - 0.5, height - 0.5,
                                                                                       -0.5))
        if run.masks is not None:
            for k in range(len(run.objects)):
                mask = run.masks.masks[sample, k]
                if mask.any():
                    axis.contour(mask.astype(float), levels=[0.5], colors="white",
                                 linestyles="solid" if k == word.obj else "dashed", linewidths=1.2)
            own, other = (percent(v) for v in mine[i].shares[:2])
            text = "no mask" if mine[i].sources[0] == "none" else f"own {own}, other {other}"
            axis.set_title(f"{word.word}: {text}", fontsize=8)
        else:
            axis.set_title(f"{word.word}: {percent(mine[i].mass)} of attention", fontsize=8)
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
    return figure_to_image(fig)
