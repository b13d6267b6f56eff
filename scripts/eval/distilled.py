"""The guidance-distilled student against its CFG teacher on the toy profile (issue 28).

    HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python -m scripts.eval.distilled

Quality: the evaluation harness (``scripts.eval.evaluate --methods cfg,distilled``; every sample one call of the
``/text_to_image`` task, the same per-sample seeds for both) on the world's 24 single-object prompts at
w ∈ {1, 2, 4, 7, 12}: judge accuracy, pixel diversity, saturation. Cost: the same endpoint in one process, teacher
and student interleaved (``scripts.shared.bench.interleaved_medians``), wall time per image, and the UNet rows per
image counted by a forward pre-hook on every ``UNet2DConditionModel`` call. Runs go to ``.toy_runs/distilled``
(``--resume`` keeps what is there); the table and plot to ``assets/toy/distilled_eval.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

from models.profiles import load_profile
from reporting.plots import figure_to_image, subplots
from scripts.eval import evaluate
from scripts.shared.bench import interleaved_medians
from scripts.shared.metrics import read_summary
from scripts.shared.training import ASSETS, ROOT
from tasks.text_to_image import TEXT_TO_IMAGE

METHODS = ("cfg", "distilled")
PROMPT = "a red circle"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="1,2,4,7,12")
    parser.add_argument("--samples-per-prompt", type=int, default=4)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=11, help="interleaved timed requests per method and scale")
    parser.add_argument("--runs", type=Path, default=ROOT / ".toy_runs" / "distilled")
    parser.add_argument("--out", type=Path, default=ASSETS / "distilled_eval")
    parser.add_argument("--table-only", action="store_true", help="rewrite the table from the runs on disk")
    return parser.parse_args(argv)


@contextmanager
def counting_unet_rows() -> Iterator[list[int]]:
    """Rows of every ``UNet2DConditionModel`` forward inside the block, whichever UNet the endpoint loaded."""
    counted: list[int] = []

    def count(module: torch.nn.Module, args: tuple) -> None:
        if isinstance(module, UNet2DConditionModel):
            counted.append(int(args[0].shape[0]))

    hook = torch.nn.modules.module.register_module_forward_pre_hook(count)
    try:
        yield counted
    finally:
        hook.remove()


def measure_cost(scales: list[float], steps: int, repeats: int) -> dict:
    """Per method and scale: wall seconds per image (median of interleaved requests) and UNet rows per image."""
    profile = load_profile("toy")

    def request(method: str, scale: float) -> Callable[[], object]:
        return lambda: TEXT_TO_IMAGE(profile, prompt=PROMPT, guidance=method, scale=scale, steps=steps, seed=0,
                                     num_images=1)

    out: dict[str, dict[str, dict]] = {}
    for scale in scales:
        calls = {method: request(method, scale) for method in METHODS}
        seconds = interleaved_medians(calls, warmup=1, repeats=repeats, desc=f"w = {scale:g}")
        for method, call in calls.items():
            with counting_unet_rows() as rows:
                call()
            out.setdefault(method, {})[f"{scale:g}"] = {"seconds_per_image": seconds[method],
                                                        "unet_rows_per_image": sum(rows)}
    return out


def markdown(report: dict) -> str:
    lines = ["# Guidance distillation on the toy profile (`python -m scripts.eval.distilled`)", "",
             f"Teacher: the toy UNet with CFG (two rows per step). Student: `{report['student']}`, w through its "
             f"timestep-like class embedding, one row per step. {report['prompts']} single-object prompts × "
             f"{report['samples_per_prompt']} samples per cell, {report['steps']} DDIM steps, the same seeds in "
             "both columns. Accuracy: the toy judge (colour and shape right) with its 95 % Wilson interval. Time: "
             f"median of {report['repeats']} interleaved `/text_to_image` requests in one process (one image, "
             f"{report['steps']} steps); rows: UNet batch rows per image, counted by a forward pre-hook.", "",
             "| w | teacher accuracy | student accuracy | Δ | teacher diversity | student diversity | "
             "teacher saturation | student saturation | teacher s/image | student s/image | time ratio | "
             "rows ratio |", "|" + "---|" * 12]
    for row in report["rows"]:
        teacher, student = row["cfg"], row["distilled"]
        lines.append(
            f"| {row['scale']:g} | {teacher['both']:.3f} [{teacher['both_lo']:.2f}, {teacher['both_hi']:.2f}] | "
            f"{student['both']:.3f} [{student['both_lo']:.2f}, {student['both_hi']:.2f}] | "
            f"{student['both'] - teacher['both']:+.3f} | {teacher['diversity']:.3f} | {student['diversity']:.3f} | "
            f"{teacher['saturation']:.3f} | {student['saturation']:.3f} | {teacher['seconds_per_image']:.3f} | "
            f"{student['seconds_per_image']:.3f} | {row['time_ratio']:.2f} | {row['rows_ratio']:.2f} |")
    lines += ["", "Targets (issue 28): accuracy within 0.02 of the teacher at w ∈ {2, 4, 7}; time ≤ 0.55×; rows 0.5×.",
              "", report["verdict"]]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    fig, axes = subplots(3, (15.0, 4.0))
    scales = [row["scale"] for row in report["rows"]]
    for method, style, label in (("cfg", "-o", "teacher (CFG, 2 rows/step)"),
                                 ("distilled", "--s", "student (1 row/step)")):
        for axis, key in zip(axes, ("both", "saturation", "seconds_per_image"), strict=True):
            axis.plot(scales, [row[method][key] for row in report["rows"]], style, label=label)
    for axis, title in zip(axes, ("judge accuracy (colour and shape)", "HSV saturation", "seconds per image"),
                           strict=True):
        axis.set(title=title, xlabel="guidance scale w")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    fig.suptitle("Guidance distillation on the toy profile: the student against its CFG teacher", fontsize=10)
    figure_to_image(fig).save(path)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    scales = [float(s) for s in args.scales.split(",")]
    cost_path = args.runs / "cost.json"
    if not args.table_only:
        evaluate.main(["--profile", "toy", "--methods", ",".join(METHODS), "--scales", args.scales,
                       "--prompt-set", "single", "--samples-per-prompt", str(args.samples_per_prompt),
                       "--steps", str(args.steps), "--out", str(args.runs), "--resume"])
        cost_path.write_text(json.dumps(measure_cost(scales, args.steps, args.repeats), indent=1) + "\n")
    summary = {(r["method"], r["scale"]): r for r in read_summary(args.runs / "summary.csv")}
    cost = json.loads(cost_path.read_text())
    rows = []
    for scale in scales:
        row: dict = {"scale": scale}
        for method in METHODS:
            row[method] = {**summary[(method, scale)], **cost[method][f"{scale:g}"]}
        row["time_ratio"] = row["distilled"]["seconds_per_image"] / row["cfg"]["seconds_per_image"]
        row["rows_ratio"] = row["distilled"]["unet_rows_per_image"] / row["cfg"]["unet_rows_per_image"]
        rows.append(row)
    checked = [r for r in rows if r["scale"] in (2.0, 4.0, 7.0)]
    worst = max(checked, key=lambda r: abs(r["distilled"]["both"] - r["cfg"]["both"]))
    gap = worst["distilled"]["both"] - worst["cfg"]["both"]
    slowest = max(r["time_ratio"] for r in rows)
    verdict = (f"Measured: largest accuracy gap at w ∈ {{2, 4, 7}} {gap:+.3f} (w = {worst['scale']:g}; target within "
               f"0.02: {'met' if abs(gap) <= 0.02 else 'not met'}); time ratio at most {slowest:.2f} (target ≤ 0.55: "
               f"{'met' if slowest <= 0.55 else 'not met'}); rows ratio "
               f"{max(r['rows_ratio'] for r in rows):.2f}.")
    report = {"student": load_profile("toy").display_source("distilled"), "prompts": 24,
              "samples_per_prompt": args.samples_per_prompt, "steps": args.steps, "repeats": args.repeats,
              "rows": rows, "verdict": verdict}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    plot(report, args.out.with_suffix(".png"))
    print(markdown(report))


if __name__ == "__main__":
    main()
