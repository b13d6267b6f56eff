"""Classifier guidance vs CFG on the toy world's 24 classes: judge accuracy, diversity and cost per step.

    HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python -m scripts.eval.class_guidance --threads 1    # ~6 min

Both methods sample through the app's pipelines from the same seeds (DDIM 25, η = 0): classifier guidance is the toy
UNet's empty-prompt branch steered by the noise-aware world classifier (``pipelines.classifier_guidance``), CFG the
toy DiT with its null label (``pipelines.class_cfg``). Every class gets ``--per-class`` samples per scale; the
independent judge CNN reads colour and shape; diversity is the mean pairwise RMS pixel distance within a class and
the spread of the shape's centroid (``scripts.eval.toy``). Writes ``assets/toy/class_guidance.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from condition.shapes_world import CLASS_NAMES
from experiments.guidance_compare import compare
from guidance.rules import GuidanceRule
from models.architectures.toy_judge import load_judge
from models.loading.dit import load_dit
from models.profiles import load_profile
from models.runtime import pick_runtime
from pipelines.class_cfg import class_cfg_sample
from pipelines.classifier_guidance import classifier_guided_sample
from pipelines.toy_guidance import load_toy_guided
from reporting.plots import figure_to_image, subplots
from scripts.eval.toy import diversity_and_spread, judge_accuracy
from scripts.shared.training import ASSETS, setup

CFG_SCALES = (0.0, 1.0, 2.0, 4.0, 7.0)
CG_SCALES = (0.0, 1.0, 3.0, 10.0, 20.0)
TRAP = "CFG (DiT), DDIM clipping x̂0 but keeping ε"


def sample_cfg(dit, scale: float, per_class: int, steps: int, clip_sample: str = "off") -> torch.Tensor:
    rows = []
    for class_id in range(len(CLASS_NAMES)):
        out = class_cfg_sample(dit, class_id=class_id, rule=GuidanceRule("cfg", scale), steps=steps,
                               scheduler="ddim", seed=class_id, num_images=per_class, diagnostics=False,
                               clip_sample=clip_sample)
        rows.append(out.images)
    return torch.cat(rows) * 2 - 1


def sample_cg(pair, scale: float, per_class: int, steps: int) -> torch.Tensor:
    rows = []
    for class_id in range(len(CLASS_NAMES)):
        out = classifier_guided_sample(pair, class_id=class_id, classifier_scale=scale, steps=f"ddim{steps}",
                                       sampler="ddim", seed=class_id, num_images=per_class)
        rows.append(out.guided.images)
    return torch.cat(rows) * 2 - 1


def grid(samples: dict[str, torch.Tensor], per_class: int, classes: tuple[int, ...] = (0, 5, 10, 15, 19)) -> Image:
    """Rows: method and scale; columns: the first sample of a few classes."""
    tiles = []
    for images in samples.values():
        tiles.append(torch.cat([images[c * per_class] for c in classes], dim=2))
    array = ((torch.cat(tiles, dim=1).permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
    return Image.fromarray(array).resize((array.shape[1] * 3, array.shape[0] * 3), Image.NEAREST)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=4)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    setup(0, args.threads)
    profile, runtime = load_profile("toy"), pick_runtime("cpu", "float32")
    dit, pair, judge = load_dit(profile, runtime), load_toy_guided(profile, runtime), load_judge(ASSETS / "judge")
    labels = np.repeat(np.arange(len(CLASS_NAMES)), args.per_class)
    rows, samples = [], {}
    jobs = [("CFG (DiT)", w, lambda w=w: sample_cfg(dit, w, args.per_class, args.steps)) for w in CFG_SCALES]
    jobs += [("classifier guidance", s, lambda s=s: sample_cg(pair, s, args.per_class, args.steps))
             for s in CG_SCALES]
    # Issue 17's trap: DDIM that clips x̂0 but steps with the model's own ε (clip_sample=True from a DDPM config).
    jobs.append((TRAP, 4.0, lambda: sample_cfg(dit, 4.0, args.per_class, args.steps, clip_sample="unclipped-eps")))
    for method, scale, draw in tqdm(jobs, desc="methods × scales"):
        start = time.perf_counter()
        x = draw()
        seconds = time.perf_counter() - start
        accuracy = judge_accuracy(judge, x, labels)
        diversity, spread = diversity_and_spread(x, labels)
        rows.append(dict(method=method, scale=scale, n=len(labels), **accuracy, diversity=diversity, spread=spread,
                         seconds=round(seconds, 1)))
        samples[f"{method} {scale:g}"] = x
    # Cost per step, counted and timed by the same code as the /cg_vs_cfg endpoint (one class, batch per_class).
    costs = compare(pair, dit, class_id=0, classifier_scale=10.0, cfg_scale=4.0, steps=args.steps, seed=0,
                    num_images=args.per_class, same_space=True).costs
    report = {"rows": rows, "costs": [c.__dict__ | {"ratio": c.ratio} for c in costs],
              "per_class": args.per_class, "steps": args.steps, "dit_training": json.loads(
                  (ASSETS / "dit" / "train.json").read_text())}
    (ASSETS / "class_guidance.json").write_text(json.dumps(report, indent=1))
    grid(samples, args.per_class).save(ASSETS / "class_guidance.png")
    write_markdown(report)
    plot(rows)


def write_markdown(report: dict) -> None:
    lines = [f"Judge accuracy over the 24 classes × {report['per_class']} seeds = {report['rows'][0]['n']} samples "
             f"per row, DDIM {report['steps']} (`python -m scripts.eval.class_guidance`).", "",
             "| method | scale | colour | shape | both | diversity (RMS px) | centroid spread (px) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        lines.append(f"| {r['method']} | {r['scale']:g} | {r['colour']:.3f} | {r['shape']:.3f} | {r['both']:.3f} | "
                     f"{r['diversity']:.3f} | {r['spread']:.2f} |")
    lines += ["", "| method | model rows / step | classifier forwards / step | backward passes / step | "
              "ms / step | unguided ms / step | ratio |", "|---|---:|---:|---:|---:|---:|---:|"]
    for c in report["costs"]:
        lines.append(f"| {c['method']} | {c['model_rows']:g} | {c['classifier_forwards']:g} | "
                     f"{c['backward_passes']:g} | {c['seconds_per_step'] * 1e3:.1f} | "
                     f"{c['unguided_seconds_per_step'] * 1e3:.1f} | {c['ratio']:.2f}× |")
    (ASSETS / "class_guidance.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def plot(rows: list[dict]) -> None:
    fig, axes = subplots(2, (9.0, 3.2))
    for method, colour in (("CFG (DiT)", "tab:red"), ("classifier guidance", "tab:blue"), (TRAP, "black")):
        mine = [r for r in rows if r["method"] == method]
        axes[0].plot([r["scale"] for r in mine], [r["both"] for r in mine], "o-", color=colour, label=method)
        axes[1].plot([r["both"] for r in mine], [r["diversity"] for r in mine], "o-", color=colour, label=method)
        for r in mine:
            axes[1].annotate(f"{r['scale']:g}", (r["both"], r["diversity"]), fontsize=7)
    axes[0].set_xlabel("guidance scale (w for CFG, s for classifier guidance)")
    axes[0].set_ylabel("judge: colour and shape right")
    axes[1].set_xlabel("judge: colour and shape right")
    axes[1].set_ylabel("diversity within a class (RMS px)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure_to_image(fig).save(ASSETS / "class_guidance_plot.png")


if __name__ == "__main__":
    main()
