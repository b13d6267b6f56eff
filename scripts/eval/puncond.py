"""Measure the shipped p_uncond networks against the exact 2D scores; write the table, plot and JSON.

    nice -n 10 .venv/bin/python -m scripts.eval.puncond            # every shipped (p, seed): ~8 min on one thread
    nice -n 10 .venv/bin/python -m scripts.eval.puncond --replot   # redraw the table and plot from the JSON

Per network (``experiments.puncond``): the mean squared ε error of the conditional and of the unconditional branch,
and CFG at w ∈ {1, 3, 7} for each of the three target classes, run through the playground's loop (DDPM, 200 steps,
2000 samples, noise seed 0 for every network) beside the exact-guided run from the same noise: class fraction and
energy distance to the exact samples. The floor of that distance (two exact runs from different noise) is
measured too. Writes ``assets/toy/puncond.{md,png,json}``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from experiments.puncond import SCALES, branch_errors, exact_floor, guided_comparison
from models.architectures.gmm2d import default_mixture
from models.architectures.score_mlp import PUNCOND_DIR, PuncondRecord, load_puncond_net
from models.profiles import ROOT
from pipelines.playground import energy_distance, run_playground
from reporting.plots import figure_to_image, subplots
from scripts.shared.training import setup

OUT = ROOT / "assets" / "toy" / "puncond"
SAMPLING = dict(sampler="ddpm", steps=200, num_samples=2000, seed=0)


def measure(record: PuncondRecord, folder: Path) -> dict:
    classes = default_mixture().class_names
    # The exact-guided runs are the same for every network: made once per (scale, class).
    exact = {(scale, name): run_playground("cfg", scale, target_class=name, **SAMPLING)
             for scale in SCALES for name in classes}
    nets = []
    for p_uncond in tqdm(record.p_values, desc="p_uncond", unit="p"):
        for seed in record.seeds:
            net = load_puncond_net(p_uncond, seed, folder)
            errors = branch_errors(net)
            row = {"p_uncond": p_uncond, "seed": seed, **errors.summary(), "by_t": errors.by_range(), "cfg": {}}
            for scale in SCALES:
                per_class = [guided_comparison(net, scale, target_class=name, exact=exact[scale, name], **SAMPLING)
                             .summary() for name in classes]
                row["cfg"][f"{scale:g}"] = {key: round(float(np.mean([c[key] for c in per_class])), 5)
                                            for key in per_class[0]} | {"per_class": dict(zip(classes, per_class,
                                                                                             strict=True))}
            nets.append(row)
    floor = {f"{scale:g}": round(float(np.mean([exact_floor(scale, target_class=name, **SAMPLING)
                                                for name in classes])), 5) for scale in SCALES}
    # What ignoring the label gives: exact unconditional samples (same noise) against the exact CFG samples.
    uncond = {name: run_playground("classifier", 0.0, target_class=name, **SAMPLING) for name in classes}
    ignored = {f"{scale:g}": {
        "class_fraction": round(float(np.mean([uncond[name].stats["class_fraction"] for name in classes])), 5),
        "energy_distance": round(float(np.mean([energy_distance(uncond[name].samples, exact[scale, name].samples)
                                                for name in classes])), 5)} for scale in SCALES}
    return {"nets": nets, "energy_distance_floor": floor, "label_ignored": ignored, "sampling": SAMPLING,
            "classes": list(classes)}


def aggregate(results: dict, record: PuncondRecord) -> list[dict]:
    """Per p: mean, standard deviation, min and max over the training seeds of every number."""
    rows = []
    for p_uncond in record.p_values:
        nets = [n for n in results["nets"] if n["p_uncond"] == p_uncond]
        values = {"cond_error": [n["cond_error"] for n in nets], "uncond_error": [n["uncond_error"] for n in nets]}
        for scale in SCALES:
            for key in ("class_fraction", "energy_distance"):
                values[f"{key}@{scale:g}"] = [n["cfg"][f"{scale:g}"][key] for n in nets]
        ranges = nets[0]["by_t"]
        by_t = {r: {k: float(np.mean([n["by_t"][r][k] for n in nets])) for k in ranges[r]} for r in ranges}
        rows.append({"p_uncond": p_uncond, "seeds": len(nets), "by_t": by_t,
                     **{k: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                            "min": float(np.min(v)), "max": float(np.max(v))} for k, v in values.items()}})
    return rows


def fmt(stat: dict, digits: int = 4) -> str:
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.2g}"


def exact_class_fractions(results: dict) -> dict[str, float]:
    """Class fraction of the exact-guided runs per w (mean over the classes; the same for every network)."""
    per_class = results["nets"][0]["cfg"]
    return {f"{s:g}": float(np.mean([c["exact_class_fraction"] for c in per_class[f"{s:g}"]["per_class"].values()]))
            for s in SCALES}


def write_markdown(rows: list[dict], results: dict, record: PuncondRecord) -> str:
    label_effect = results["nets"][0]["label_effect"]
    exact_cf = exact_class_fractions(results)
    training = record.training
    lines = [
        "# p_uncond, measured (2D mixture, exact scores)", "",
        f"{len(record.seeds)} training seeds per p (mean ± sample std over seeds); {training.get('steps')} Adam steps "
        f"of batch {training.get('batch')} per network; `python -m scripts.train.puncond_2d` then "
        "`python -m scripts.eval.puncond`.", "",
        "## Branch errors: mean squared ε error per coordinate vs the exact ε", "",
        f"Over t = 10, 30, …, 990 and (x0, c) ~ p(x, c), 20 000 draws, the same for every network. For scale: the "
        f"label effect E‖ε*(x_t|c) − ε*(x_t)‖²/2 — the size of CFG's direction itself — is {label_effect:.4f}.", "",
        "| p_uncond | conditional branch | unconditional branch |", "|---:|---:|---:|",
    ]
    lines += [f"| {r['p_uncond']:g} | {fmt(r['cond_error'])} | {fmt(r['uncond_error'])} |" for r in rows]
    ranges = list(rows[0]["by_t"])
    lines += ["", "By range of t (mean over seeds; conditional / unconditional branch, and the label effect):", "",
              "| p_uncond | " + " | ".join(f"t ∈ [{r.replace('-', ', ')})" for r in ranges) + " |",
              "|---:|" + "---:|" * len(ranges)]
    for r in rows:
        cells = [f"{r['by_t'][k]['cond_error']:.4f} / {r['by_t'][k]['uncond_error']:.4f}" for k in ranges]
        lines.append(f"| {r['p_uncond']:g} | " + " | ".join(cells) + " |")
    lines.append("| label effect | " + " | ".join(f"{rows[0]['by_t'][k]['label_effect']:.2g}" for k in ranges) + " |")
    sampling = results["sampling"]
    lines += [
        "", "## CFG with each network vs CFG with the exact scores", "",
        f"{sampling['sampler'].upper()} {sampling['steps']} steps, {sampling['num_samples']} samples per target class, "
        f"noise seed {sampling['seed']} for the learned and the exact run alike; mean over the three target classes. "
        "Class fraction: share of samples nearest a component of the target class. Distance: energy distance "
        "between the learned-guided and the exact-guided samples.", "",
        "| p_uncond | " + " | ".join(f"class fraction w={s:g}" for s in SCALES) + " | "
        + " | ".join(f"energy distance w={s:g}" for s in SCALES) + " |",
        "|---:|" + "---:|" * (2 * len(SCALES)),
    ]
    for r in rows:
        cells = [fmt(r[f"class_fraction@{s:g}"], 3) for s in SCALES]
        cells += [fmt(r[f"energy_distance@{s:g}"], 4) for s in SCALES]
        lines.append(f"| {r['p_uncond']:g} | " + " | ".join(cells) + " |")
    floor, ignored = results["energy_distance_floor"], results["label_ignored"]
    lines.append("| label ignored (exact unconditional samples) | "
                 + " | ".join(f"{ignored[f'{s:g}']['class_fraction']:.3f}" for s in SCALES) + " | "
                 + " | ".join(f"{ignored[f'{s:g}']['energy_distance']:.4f}" for s in SCALES) + " |")
    lines.append("| exact scores | " + " | ".join(f"{exact_cf[f'{s:g}']:.3f}" for s in SCALES) + " | "
                 + " | ".join(f"{floor[f'{s:g}']:.4f} (floor: exact vs exact, other noise)" for s in SCALES) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], results: dict, out: Path) -> None:
    fig, (ax_err, ax_cf, ax_ed) = subplots(3, (15, 4.2))
    positions = np.arange(len(rows))
    ticks = [f"{r['p_uncond']:g}" for r in rows]

    def band(ax, key, label, **style):
        mean = np.array([r[key]["mean"] for r in rows])
        low, high = np.array([r[key]["min"] for r in rows]), np.array([r[key]["max"] for r in rows])
        line = ax.plot(positions, mean, marker="o", label=label, **style)[0]
        ax.fill_between(positions, low, high, alpha=0.2, color=line.get_color())

    band(ax_err, "cond_error", "conditional branch")
    band(ax_err, "uncond_error", "unconditional branch")
    ax_err.axhline(results["nets"][0]["label_effect"], color="k", ls="--", lw=1,
                   label="label effect ‖ε*(x|c) − ε*(x)‖²")
    ax_err.set_yscale("log")
    ax_err.set_title("ε error vs the exact scores (band: min–max over seeds)", fontsize=9)
    for scale in SCALES:
        band(ax_cf, f"class_fraction@{scale:g}", f"w = {scale:g}")
        band(ax_ed, f"energy_distance@{scale:g}", f"w = {scale:g}")
    exact_cf = exact_class_fractions(results)
    for scale, colour in zip(SCALES, ("C0", "C1", "C2"), strict=True):
        ax_ed.axhline(results["energy_distance_floor"][f"{scale:g}"], color=colour, ls=":", lw=1)
        ax_cf.axhline(exact_cf[f"{scale:g}"], color=colour, ls=":", lw=1)
    ax_cf.axhline(results["label_ignored"]["1"]["class_fraction"], color="k", ls="--", lw=1,
                  label="label ignored (exact unconditional)")
    ax_cf.set_title("CFG class fraction (dotted: exact scores)", fontsize=9)
    ax_ed.set_yscale("log")
    ax_ed.set_title("energy distance to exact CFG (dotted: exact vs exact)", fontsize=9)
    for ax in (ax_err, ax_cf, ax_ed):
        ax.set_xticks(positions, ticks)
        ax.set_xlabel("p_uncond (label dropout in training)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    figure_to_image(fig).save(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=PUNCOND_DIR)
    ap.add_argument("--out", type=Path, default=OUT, help="prefix: writes <out>.md, .png, .json")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--replot", action="store_true", help="redraw <out>.md and .png from <out>.json, measuring nothing")
    args = ap.parse_args()
    setup(0, args.threads)
    torch.set_grad_enabled(False)
    record = PuncondRecord.read(args.weights)
    if args.replot:
        results = json.loads(args.out.with_suffix(".json").read_text())
        rows = results["summary"]
    else:
        started = time.perf_counter()
        results = measure(record, args.weights)
        rows = aggregate(results, record)
        results |= {"summary": rows, "seconds": round(time.perf_counter() - started, 1), "training": record.training}
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    text = write_markdown(rows, results, record)
    args.out.with_suffix(".md").write_text(text)
    plot(rows, results, args.out.with_suffix(".png"))
    print(text)
    print(f"measured in {results['seconds']} s" + (" (redrawn from the JSON)" if args.replot else ""))


if __name__ == "__main__":
    main()
