"""CFG, CFG-Zero* and APG on the toy rectified-flow MM-DiT beside the same table for the toy UNet (issue 27).

    HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python -m scripts.eval.flow_methods

Both models are sampled by the evaluation harness (``scripts.eval.evaluate``: every sample one call of the
``/text_to_image`` task with ``model`` set, the same per-sample seeds for every method and scale) on the world's 24
single-object prompts, and scored by the toy judge (colour, shape, both right), pixel diversity between the samples of
a prompt, and saturation (HSV S, and the share of clipped channels). Runs go to ``.toy_runs/flow_methods/<model>``
(``--resume`` keeps what is there); the tables to ``assets/toy/flow_methods.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from reporting.plots import figure_to_image, subplots
from scripts.eval import evaluate
from scripts.shared.metrics import read_summary
from scripts.shared.training import ASSETS, ROOT

MODELS = {"flow": "toy flow MM-DiT (rectified flow, velocity)", "sd": "toy UNet (ε-prediction, DDIM)"}
METHODS = ("cfg", "cfg-zero-star", "apg")
COLUMNS = (("both", "judge: colour and shape right"), ("colour", "colour right"), ("shape", "shape right"),
           ("diversity", "pixel diversity"), ("saturation", "HSV saturation"), ("clipped", "clipped channels"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="1,2,4,7")
    parser.add_argument("--samples-per-prompt", type=int, default=4)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--runs", type=Path, default=ROOT / ".toy_runs" / "flow_methods")
    parser.add_argument("--out", type=Path, default=ASSETS / "flow_methods")
    parser.add_argument("--table-only", action="store_true", help="rewrite the tables from the runs on disk")
    return parser.parse_args(argv)


def run_model(model: str, args: argparse.Namespace) -> None:
    evaluate.main(["--profile", "toy", "--methods", ",".join(METHODS), "--scales", args.scales,
                   "--prompt-set", "single", "--samples-per-prompt", str(args.samples_per_prompt),
                   "--steps", str(args.steps), "--set", f"model={model}", "--out", str(args.runs / model),
                   "--resume"])


def markdown(report: dict) -> str:
    command = f"python -m scripts.eval.flow_methods --samples-per-prompt {report['samples_per_prompt']}"
    lines = [f"# Guidance on the toy flow model vs the toy UNet (`{command}`)", "",
             f"{report['prompts']} single-object prompts × {report['samples_per_prompt']} samples per cell, "
             f"{report['steps']} steps, the same seeds in every cell; judge accuracy with its 95 % Wilson interval, "
             "diversity = mean pixel distance between a prompt's samples, saturation = mean HSV S, clipped = share "
             "of channels at 0 or 255.", ""]
    header = "| model | method | w | " + " | ".join(name for _, name in COLUMNS) + " |"
    lines += [header, "|" + "---|" * (3 + len(COLUMNS))]
    for model, rows in report["models"].items():
        for row in rows:
            cells = []
            for key, _ in COLUMNS:
                value = row.get(key, float("nan"))
                if key in ("both", "colour", "shape"):
                    cells.append(f"{value:.3f} [{row[f'{key}_lo']:.2f}, {row[f'{key}_hi']:.2f}]")
                else:
                    cells.append(f"{value:.3f}")
            scale = "—" if math.isnan(row["scale"]) else f"{row['scale']:g}"  # the world's own images have no w
            lines.append(f"| {model} | {row['method']} | {scale} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    fig, axes = subplots(3, (15.0, 4.0))
    styles = {"flow": "-", "sd": "--"}
    for model, rows in report["models"].items():
        for index, method in enumerate(METHODS):
            mine = [r for r in rows if r["method"] == method]
            scales = [r["scale"] for r in mine]
            for axis, key in zip(axes, ("both", "saturation", "diversity"), strict=True):
                axis.plot(scales, [r[key] for r in mine], styles[model], marker="o", color=f"C{index}",
                          label=f"{model}: {method}")
    for axis, title in zip(axes, ("judge accuracy (colour and shape)", "HSV saturation", "pixel diversity"),
                           strict=True):
        axis.set(title=title, xlabel="guidance scale w")
        axis.grid(alpha=0.3)
    axes[0].axhline(0.95, color="grey", ls=":", lw=1)
    axes[0].legend(fontsize=7)
    fig.suptitle("solid: toy flow MM-DiT · dashed: toy UNet · dotted: the 0.95 target", fontsize=10)
    figure_to_image(fig).save(path)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.table_only:
        for model in MODELS:
            run_model(model, args)
    report = {"prompts": 24, "samples_per_prompt": args.samples_per_prompt, "steps": args.steps,
              "models": {model: read_summary(args.runs / model / "summary.csv") for model in MODELS},
              "descriptions": MODELS}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    plot(report, args.out.with_suffix(".png"))
    print(markdown(report))
    flow_rows = [r for r in report["models"]["flow"] if r["scale"] >= 2]
    worst = min(flow_rows, key=lambda r: r["both"])
    print(f"flow model, w ≥ 2: lowest judge accuracy {worst['both']:.3f} ({worst['method']}, w = {worst['scale']:g}); "
          f"target ≥ 0.95: {'met' if np.all([r['both'] >= 0.95 for r in flow_rows]) else 'not met'}")


if __name__ == "__main__":
    main()
