"""The compositional suite for every toy text-to-image model: accuracy per category against the guidance scale.

    HF_HUB_OFFLINE=1 .venv/bin/python -m scripts.eval.compositional                  # ≈ 40 min on one CPU thread
    HF_HUB_OFFLINE=1 .venv/bin/python -m scripts.eval.compositional --models sd,sd_t5 --scales 1,4 --prompts 24

Runs the evaluation harness (``scripts/eval/evaluate.py --suite compositional``, resumable) once per model, the
same prompts, seeds and scales for each, then writes ``assets/toy/compositional.{md,json,png}``: GenEval's
categories as the shapes world can express them (``scripts/shared/metrics.py``: single object, two objects, colour
attribution, position; counting cannot be expressed), with Wilson 95 % intervals, one line per model in the plot.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from reporting.plots import figure_to_image, subplots
from scripts.eval import evaluate
from scripts.shared import metrics as M
from scripts.shared.training import ASSETS, ROOT

LABELS = {"single": "single object", "two_object": "two objects", "colour_attribution": "colour attribution",
          "position": "position (left/right)"}


def run_model(model: str, args: argparse.Namespace) -> list[dict]:
    out = args.runs / model
    argv = ["--suite", "compositional", "--methods", "cfg", "--scales", ",".join(f"{s:g}" for s in args.scales),
            "--prompts", str(args.prompts), "--samples-per-prompt", str(args.samples_per_prompt),
            "--steps", str(args.steps), "--seed", str(args.seed), "--set", f"model={model}", "--out", str(out)]
    if (out / "run.json").exists() or (out / "shards").exists():
        argv.append("--resume")
    evaluate.main(argv)
    with (out / "summary.csv").open() as f:
        return list(csv.DictReader(f))


def number(row: dict, key: str) -> float:
    return float(row[key]) if row.get(key) not in (None, "") else float("nan")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="sd,sd_t5,flow", type=lambda v: [m.strip() for m in v.split(",")])
    ap.add_argument("--scales", default="1,2,4,7", type=lambda v: [float(s) for s in v.split(",")])
    ap.add_argument("--prompts", type=int, default=72, help="the first N prompts of the suite (3 per single object)")
    ap.add_argument("--samples-per-prompt", type=int, default=2)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", type=Path, default=ROOT / ".toy_runs" / "compositional")
    ap.add_argument("--out", type=Path, default=ASSETS / "compositional")
    args = ap.parse_args(argv)
    table: dict[str, list[dict]] = {}
    for model in args.models:
        rows = [r for r in run_model(model, args) if r["method"] != "world data"]
        table[model] = [{"scale": float(r["scale"]), "samples": int(r["samples"]),
                         **{k: [number(r, k), number(r, f"{k}_lo"), number(r, f"{k}_hi")] for k in M.CATEGORIES}}
                        for r in rows]
    write(table, args)


def write(table: dict[str, list[dict]], args: argparse.Namespace) -> None:
    command = ("python -m scripts.eval.compositional --models " + ",".join(table) + " --scales "
               + ",".join(f"{s:g}" for s in args.scales) + f" --prompts {args.prompts} --samples-per-prompt "
               f"{args.samples_per_prompt} --steps {args.steps} --seed {args.seed}")
    lines = [f"# Compositional suite on the toy models (`{command}`)", "",
             f"GenEval's categories in the shapes world, CFG at each scale, {args.steps} steps of each model's own "
             "sampler (DDIM for the UNets, flow-matching Euler for the flow model), the same prompts "
             "and seeds for every model; accuracy with its Wilson 95 % interval. Counting is not in the suite: the "
             "world's captions never count.", "",
             "| model | w | " + " | ".join(LABELS[k] for k in M.CATEGORIES) + " |",
             "|---|---:|" + "---:|" * len(M.CATEGORIES)]
    for model, rows in table.items():
        for row in rows:
            cells = [f"{row[k][0]:.3f} ({row[k][1]:.2f}–{row[k][2]:.2f})" for k in M.CATEGORIES]
            lines.append(f"| {model} | {row['scale']:g} | " + " | ".join(cells) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"command": command, "table": table}, indent=1))
    fig, axes = subplots(len(M.CATEGORIES), (4.0 * len(M.CATEGORIES), 3.4))
    for ax, key in zip(axes, M.CATEGORIES, strict=True):
        for model, rows in table.items():
            scales = [r["scale"] for r in rows]
            means = [r[key][0] for r in rows]
            below = [max(r[key][0] - r[key][1], 0) for r in rows]
            above = [max(r[key][2] - r[key][0], 0) for r in rows]
            ax.errorbar(scales, means, yerr=[below, above], marker="o", capsize=2, label=model)
        ax.set_title(LABELS[key], fontsize=10)
        ax.set_xlabel("guidance scale w")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (judge, on the pixels)")
    axes[0].legend(fontsize=8)
    figure_to_image(fig).save(args.out.with_suffix(".png"))
    print(f"wrote {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
