"""Toy binding accuracy at CFG w ∈ {1, 4, 7}: does each colour and shape word attend to its own object?

    HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python -m scripts.eval.binding --threads 1   # ~8 min on 1 CPU core
    HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python -m scripts.eval.binding --model sd_t5  # the T5-reading UNet

Prompts are the world's own two-object captions naming the first object's position ("a red circle on the left and a
blue square", ``scripts.shared.metrics.pair_prompts``); each is sampled ``--samples`` times per scale with the same
seeds at every w (a paired comparison), exactly as the Attention binding tab samples it
(``experiments.attention_binding.attention_binding``: the one sampler loop, DDIM, the recorder on every cross-attention
layer). Masks are read off each sample by colour (``experiments.binding_masks``). Writes ``assets/toy/binding.json``
(every summary), ``assets/toy/binding.md`` (the table) and ``assets/toy/binding.png`` (accuracy per step and per
layer, shares per w); ``--model sd_t5`` writes ``assets/toy/binding_sd_t5.*``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from experiments.attention_binding import REGIONS, attention_binding
from experiments.binding_report import KINDS, percent, summarise, word_samples
from models.loading.sd import load_role_sd
from models.profiles import load_profile
from models.runtime import pick_runtime
from reporting.plots import figure_to_image, subplots
from scripts.shared.metrics import pair_prompts
from scripts.shared.training import ASSETS, setup

SCALES = (1.0, 4.0, 7.0)
MODELS = ("sd", "sd_t5")  # the toy profile's UNet roles: cross-attention maps need a UNet


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=30, help="distinct two-object prompts")
    parser.add_argument("--samples", type=int, default=4, help="samples per prompt and scale")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--scales", type=float, nargs="+", default=list(SCALES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", choices=MODELS, default="sd",
                        help="the toy profile's UNet role: sd (CLIP-like encoder) or sd_t5 (order-aware T5 encoder)")
    parser.add_argument("--out", type=Path, default=None, help="default assets/toy/binding (binding_sd_t5 for sd_t5)")
    args = parser.parse_args(argv)
    args.out = args.out or ASSETS / ("binding" if args.model == "sd" else f"binding_{args.model}")
    return args


def evaluate(args: argparse.Namespace) -> dict:
    setup(args.seed, args.threads)
    profile = load_profile("toy")
    sd = load_role_sd(profile, pick_runtime(), args.model)
    prompts = pair_prompts(args.prompts, seed=args.seed)
    results, started = {}, time.perf_counter()
    for scale in args.scales:
        samples, layers, seconds = [], [], time.perf_counter()
        for index, prompt in enumerate(tqdm(prompts, desc=f"w = {scale:g}")):
            run = attention_binding(sd, prompt.text, scale=scale, steps=args.steps, seed=args.seed + index,
                                    num_images=args.samples, world=True)
            samples += word_samples(run)
            layers = run.layers
        summary = summarise(samples)
        summary["layers"] = layers
        summary["seconds"] = time.perf_counter() - seconds
        results[f"{scale:g}"] = summary
    return {"config": {"model_role": args.model, "prompts": args.prompts, "samples_per_prompt": args.samples,
                       "steps": args.steps, "scheduler": "ddim", "seed": args.seed, "threads": args.threads,
                       "model": profile.display_source(args.model),
                       "prompt_examples": [p.text for p in prompts[:3]]},
            "seconds": time.perf_counter() - started, "scales": results}


def markdown(report: dict) -> str:
    config = report["config"]
    lines = [
        f"# Toy attention binding (`python -m scripts.eval.binding --model {config.get('model_role', 'sd')}`)", "",
        f"{config['prompts']} two-object prompts of the shapes world × {config['samples_per_prompt']} samples per "
        f"scale (the same seeds at every w), DDIM {config['steps']} steps, model `{config['model']}`, the toy UNet's "
        f"{len(next(iter(report['scales'].values()))['layers'])} cross-attention layers. A word is bound when its "
        "cross-attention mass (summed over steps and layers) on its own object exceeds that on the other object; "
        "masks are the sample's pixels of each named colour (layout disc when a colour is missing). n counts "
        "word × sample decisions; the interval is Wilson's 95 %. The uniform-map baseline is the accuracy of a map "
        "spread evenly (own object larger than the other).", "",
        "| w | words | binding accuracy | 95 % interval | n | uniform-map baseline | own share | other share | "
        "background share |", "|---|---|---|---|---|---|---|---|---|",
    ]
    for scale, summary in report["scales"].items():
        for kind in (*KINDS, "all"):
            e = summary[kind]
            low, high = e["interval"]
            shares = e["shares"]
            lines.append(f"| {scale} | {kind} | {percent(e['accuracy'])} | {percent(low)} – {percent(high)} | "
                         f"{e['n']} | {percent(e['area_baseline'])} | {percent(shares['own'])} | "
                         f"{percent(shares['other'])} | {percent(shares['background'])} |")
    lines += ["", "| w | masks from colour / layout / none (per object) | colour mask at the named "
              "position | seconds |", "|---|---|---|---|"]
    for scale, summary in report["scales"].items():
        sources = summary["mask_sources"]
        check = summary["layout_agrees"]
        lines.append(f"| {scale} | {sources.get('colour', 0)} / {sources.get('layout', 0)} / "
                     f"{sources.get('none', 0)} | {check['agree']}/{check['checked']} | {summary['seconds']:.0f} |")
    lines += ["", f"Total {report['seconds']:.0f} s on {config['threads']} thread(s)."]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    fig, axes = subplots(3, (14, 3.6))
    styles = {"colour": "-", "shape": "--"}
    scales = list(report["scales"])
    for index, (scale, summary) in enumerate(report["scales"].items()):
        colour = f"C{index}"
        for kind in KINDS:
            e = summary[kind]
            steps = np.arange(1, len(e["accuracy_by_step"]) + 1)
            axes[0].plot(steps, e["accuracy_by_step"], styles[kind], color=colour, label=f"w = {scale}, {kind}")
            layers = np.arange(len(e["accuracy_by_layer"]))
            offset = (index * 2 + KINDS.index(kind) - len(scales) + 0.5) * 0.8 / (2 * len(scales))
            axes[1].bar(layers + offset, e["accuracy_by_layer"], 0.8 / (2 * len(scales)), color=colour,
                        alpha=1.0 if kind == "colour" else 0.5, label=f"w = {scale}, {kind}")
    baseline = np.mean([s["all"]["area_baseline"] for s in report["scales"].values()])
    for axis in axes[:2]:
        axis.axhline(baseline, color="grey", ls=":", lw=1)
        axis.set_ylim(0, 1.02)
    axes[0].set(title="bound (own > other), per step", xlabel="denoising step")
    axes[1].set(title="bound, per layer (colour solid, shape faded)")
    layer_names = next(iter(report["scales"].values()))["layers"]
    axes[1].set_xticks(np.arange(len(layer_names)), layer_names)
    width = 0.8 / len(REGIONS)
    for r, region in enumerate(REGIONS):
        for k, kind in enumerate(KINDS):
            values = [report["scales"][s][kind]["shares"][region] for s in scales]
            x = np.arange(len(scales)) * 2 + k + (r - 1) * width
            axes[2].bar(x, values, width, color=("tab:green", "tab:red", "tab:grey")[r],
                        alpha=1.0 if kind == "colour" else 0.5, label=f"{region}" if k == 0 else None)
    axes[2].set_xticks([2 * i + 0.5 for i in range(len(scales))], [f"w = {s}" for s in scales])
    axes[2].set(title="share of the word's mass (colour | shape words)", ylim=(0, 1))
    for axis in axes:
        axis.legend(fontsize=7)
    fig.suptitle("Toy attention binding: grey dotted = uniform-map baseline", fontsize=10)
    figure_to_image(fig).save(path)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = evaluate(args)
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    plot(report, out.with_suffix(".png"))
    print(markdown(report))


if __name__ == "__main__":
    main()
