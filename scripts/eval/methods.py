"""Every guidance method on the toy profile, side by side: adherence, diversity, saturation and step cost.

    HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python -m scripts.eval.methods --threads 1   # ~40 min on 1 CPU core

Writes ``assets/toy/methods.md`` (the table) and ``assets/toy/methods.png`` (adherence vs diversity, one curve
per method). Samples come from ``pipelines.text_to_image.generate`` exactly as the Text-to-image tab draws them
(the same noise, seed 123, for every method and scale), measured with ``scripts.eval.toy``'s metrics and judge;
step cost from ``scripts.bench.methods.loop_step_costs`` (interleaved, relative to CFG). Samples are cached
in ``.toy_runs/eval_cache`` so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import torch
from torch import Tensor

from condition.shapes_world import CLASS_NAMES, SHAPE_NAMES, class_parts, plain_caption
from guidance.rules import GuidanceRule
from guidance.settings import SamplingSettings
from models.adapters.denoisers import UNetDenoiser
from models.architectures.toy_judge import ToyJudge, load_judge
from models.loading.sd import load_autoguide, load_role_sd
from models.runtime import pick_runtime
from pipelines.text_to_image import generate, latent_shape, resolve_size
from reporting.plots import figure_to_image, subplots
from scripts.bench.methods import loop_step_costs, toy_setup
from scripts.eval.toy import Eval, diversity_and_spread, judge_accuracy, saturation, text_contexts
from scripts.shared.training import ASSETS, setup


@dataclass(frozen=True)
class Config:
    """One row: a method label (one curve in the plot), the value on its x-axis, and the rule."""

    method: str
    value: str
    rule: GuidanceRule


W_SCALES = (1.5, 3.0, 7.0)


def configs() -> list[Config]:
    """Each method at the same scales where ``scale`` means w; CFG++ at λ; modifiers on CFG at w = 7."""
    rows = [Config("cfg", "1", GuidanceRule("cfg", 1.0))]  # the conditional model alone: where every curve starts
    rows += [Config(name, f"{w:g}", GuidanceRule(name, w))
             for name in ("cfg", "apg", "cfg-zero-star", "tcfg", "autoguidance") for w in W_SCALES]
    # The APG paper projects the denoised prediction (x̂0); diffusers' guider (and the app) project ε.
    rows += [Config("apg, x0 space", f"{w:g}", GuidanceRule("apg", w, space="x0")) for w in W_SCALES]
    rows += [Config("cfg++", f"λ {lam:g}", GuidanceRule("cfg++", lam)) for lam in (0.2, 0.5, 0.8)]
    rows += [
        Config("pag (no cfg)", "s 3", GuidanceRule("none", 1.0, pag_scale=3.0)),
        Config("cfg + pag 3", "3", GuidanceRule("cfg", 3.0, pag_scale=3.0)),
        Config("cfg, interval 0.25–0.75", "7", GuidanceRule("cfg", 7.0, interval_start=0.25, interval_end=0.75)),
        Config("cfg", "20", GuidanceRule("cfg", 20.0)),
        Config("cfg + threshold 0.995", "7", GuidanceRule("cfg", 7.0, threshold=0.995)),
        Config("cfg + threshold 0.995", "20", GuidanceRule("cfg", 20.0, threshold=0.995)),
    ]
    return rows


@torch.no_grad()
def judge_confidence(judge: ToyJudge, x: Tensor, labels: np.ndarray) -> float:
    """Mean probability the judge gives the prompt's (colour, shape): graded adherence where accuracy saturates."""
    colour_logits, shape_logits = judge(x.float().clamp(-1, 1))
    colours = torch.from_numpy(labels // len(SHAPE_NAMES))
    shapes = torch.from_numpy(labels % len(SHAPE_NAMES))
    p_colour = colour_logits.softmax(1).gather(1, colours[:, None])
    p_shape = shape_logits.softmax(1).gather(1, shapes[:, None])
    return float((p_colour * p_shape).mean())


def rule_tag(rule: GuidanceRule) -> str:
    used = "_".join(f"{k}{v}" for k, v in sorted(rule.used_options().items()))
    space = "" if rule.space == "eps" else f"_{rule.space}"
    return f"{rule.name}{rule.scale:g}_{used}{space}".replace(" ", "")


def plot(results: list[dict], path: Path) -> None:
    """Adherence (judge confidence) vs diversity, one curve per method in the order of its scales: every row on
    the left, the saturated corner (where most methods sit) enlarged on the right."""
    fig, axes = subplots(2, (13.0, 5.2))
    methods = list(dict.fromkeys(r["method"] for r in results))
    # tab20's dark shades first, then its light ones: eleven methods, eleven distinguishable colours.
    colours = [matplotlib.colormaps["tab20"](i) for i in (*range(0, 20, 2), *range(1, 20, 2))]
    markers = "osD^vP*Xhp<>"
    corner = [r for r in results if r["confidence"] >= 0.98]
    for ax, shown, title in ((axes[0], results, "every row"), (axes[1], corner, "adherence ≥ 0.98, enlarged")):
        for i, method in enumerate(methods):
            pts = [r for r in shown if r["method"] == method]
            if not pts:
                continue
            ax.plot([r["diversity"] for r in pts], [r["confidence"] for r in pts], marker=markers[i % len(markers)],
                    color=colours[i % len(colours)], label=method, linestyle="-" if len(pts) > 1 else "none")
            for r in pts:
                ax.annotate(r["value"], (r["diversity"], r["confidence"]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points", color=colours[i % len(colours)])
        ax.set_xlabel("diversity (mean pairwise RMS within a prompt, 0–1 pixels)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("adherence: judge p(colour, shape of the prompt)")
    axes[0].legend(fontsize=7, loc="center")  # the left panel holds every method; its middle is empty
    fig.suptitle("Toy profile: every guidance method on the same noise (point labels: scale)")
    figure_to_image(fig).save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=5, help="samples per prompt (24 prompts)")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cost-repeats", type=int, default=5)
    ap.add_argument("--plot-only", action="store_true", help="redraw methods.png from methods.json")
    args = ap.parse_args()
    if args.plot_only:
        plot(json.loads((ASSETS / "methods.json").read_text()), ASSETS / "methods.png")
        return
    setup(0, args.threads)
    started = time.time()
    ev = Eval(ASSETS, pick_runtime("cpu", "float32"))
    judge = load_judge(ASSETS / "judge")
    sd = load_role_sd(ev.profile, ev.runtime, "sd")
    weak = load_autoguide(ev.profile, ev.runtime)
    labels = np.repeat(np.arange(len(CLASS_NAMES)), args.per_class)
    den = UNetDenoiser(sd.unet, *text_contexts(sd, [plain_caption(*class_parts(int(y))) for y in labels]))
    shape = latent_shape(sd, *resolve_size(sd, None, None), len(labels))

    def draw(rule: GuidanceRule) -> dict[str, Tensor]:
        images, _ = generate(sd, den, rule, shape, SamplingSettings(steps=args.steps, seed=123, diagnostics=False),
                             weak=weak if rule.uncond_branch == "weak" else None)
        return {"x": images * 2 - 1}

    rows = configs()
    results = []
    for cfg in rows:
        t0 = time.time()
        tag = f"methods_{rule_tag(cfg.rule)}_n{len(labels)}_s123_k{args.steps}"
        x = ev.cached(tag, lambda rule=cfg.rule: draw(rule))["x"]
        div, spread = diversity_and_spread(x, labels)
        clipped, bg = saturation(x)
        results.append({"method": cfg.method, "value": cfg.value, "rule": repr(cfg.rule),
                        "both": judge_accuracy(judge, x, labels)["both"],
                        "confidence": judge_confidence(judge, x, labels), "diversity": div, "spread": spread,
                        "clipped": clipped, "bg": bg})
        print(cfg.method, cfg.value, {k: round(v, 4) for k, v in results[-1].items() if isinstance(v, float)},
              f"({time.time() - t0:.0f}s)", flush=True)

    # Step cost of each row's rule against CFG's, interleaved on a small batch of the same model.
    cost_sd, cost_den, cost_weak = toy_setup(batch=8)
    unique = {r["rule"]: cfg.rule for r, cfg in zip(results, rows, strict=True)}
    unique = {"reference cfg": GuidanceRule("cfg", 3.0), **unique}
    per_step = loop_step_costs(cost_sd, cost_den, unique, batch=8, steps=10, weak=cost_weak,
                               repeats=args.cost_repeats)
    for r in results:
        r["cost"] = per_step[r["rule"]] / per_step["reference cfg"]

    lines = [
        "# Guidance methods on the toy profile",
        "",
        f"Generated by `python -m scripts.eval.methods`. {len(labels)} samples per row ({args.per_class} per prompt "
        f'"a {{colour}} {{shape}}", 24 prompts), DDIM {args.steps} steps, the same noise (seed 123) in every row. '
        "both = judge accuracy on colour and shape; p(prompt) = the judge's mean probability of the prompt's "
        "colour and shape (graded adherence: accuracy saturates at 1 from w ≈ 2 on these prompts); diversity = "
        "mean pairwise RMS distance within a prompt (0–1 pixels); spread = std of the shape centroid (pixels); "
        "clipped = fraction of channel values at ±1; bg = mean background brightness (0–255; world images "
        "19.6); cost = step time relative to CFG (toy UNet, batch 8, 10 steps, median of "
        f"{args.cost_repeats} interleaved runs). Method parameters are the registry's defaults (the papers' "
        "recommended values) unless the row says otherwise.",
        "",
        "| method | scale | both | p(prompt) | diversity | spread | clipped | bg | cost |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['method']} | {r['value']} | {r['both']:.3f} | {r['confidence']:.3f} | {r['diversity']:.3f} | "
              f"{r['spread']:.2f} | {r['clipped']:.4f} | {r['bg']:.1f} | {r['cost']:.2f} |" for r in results]
    lines += ["", "![adherence vs diversity](methods.png)", "",
              f"_{(time.time() - started) / 60:.1f} min on {torch.get_num_threads()} CPU thread(s)._", ""]
    (ASSETS / "methods.md").write_text("\n".join(lines))
    (ASSETS / "methods.json").write_text(json.dumps(results, indent=1))
    plot(results, ASSETS / "methods.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
