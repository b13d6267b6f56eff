"""Each guidance method's step time relative to CFG, on the toy profile's trained models, through the one loop.

    HF_HUB_OFFLINE=1 .venv/bin/python -m scripts.bench.methods [--steps 10] [--batch 8] [--repeats 7]

Two measurements per method. *Whole loop*: ``pipelines.text_to_image.generate`` with the method (the model
calls it needs, PAG's perturbed layers, autoguidance's weak UNet, the thresholding scheduler) over the same
loop with CFG, interleaved medians; on a shared CPU this is ±3 % noise. *Rule only*: the method's combine
step alone on the sample's shape (what a method that only combines predictions adds to a step), divided by
CFG's step time: the precise check that combine-only rules stay within 2 % of CFG. ``scripts/eval/toy.py``
reuses ``loop_step_costs`` for its methods table.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from diffusers import UNet2DConditionModel  # noqa: E402
from torch import Tensor  # noqa: E402

from condition.text import encode_prompts  # noqa: E402
from guidance.rules import GuidanceRule, GuideStep  # noqa: E402
from guidance.settings import SamplingSettings
from models.adapters.denoisers import UNetDenoiser  # noqa: E402
from models.loading.sd import SDComponents, load_autoguide, load_role_sd  # noqa: E402
from models.profiles import load_profile  # noqa: E402
from models.runtime import pick_runtime  # noqa: E402
from pipelines.text_to_image import generate, latent_shape, resolve_size  # noqa: E402
from scripts.shared.bench import Row, interleaved_medians, markdown_table, run_header  # noqa: E402

PROMPT = "a red circle"

# One configuration per method at a middle scale; CFG first (the reference every ratio divides by).
METHOD_RULES: dict[str, GuidanceRule] = {
    "cfg": GuidanceRule("cfg", 4.0),
    "perp-cfg": GuidanceRule("perp-cfg", 4.0),
    "apg": GuidanceRule("apg", 4.0),
    "cfg-zero-star": GuidanceRule("cfg-zero-star", 4.0),
    "tcfg": GuidanceRule("tcfg", 4.0),
    "cfg++": GuidanceRule("cfg++", 0.6),
    "autoguidance": GuidanceRule("autoguidance", 4.0),
    "cfg + pag": GuidanceRule("cfg", 4.0, pag_scale=3.0),
    "cfg, interval 0.25–0.75": GuidanceRule("cfg", 4.0, interval_start=0.25, interval_end=0.75),
    "cfg + threshold": GuidanceRule("cfg", 4.0, threshold=0.995),
}
# What each configuration's model calls are, relative to CFG's two rows per image.
CALLS = {
    "autoguidance": "the weak UNet replaces the unconditional call",
    "cfg + pag": "+1 call: the perturbed branch (3 rows per image)",
    "cfg, interval 0.25–0.75": "the unconditional call only inside the interval",
}


def loop_step_costs(
    sd: SDComponents,
    denoiser: UNetDenoiser,
    rules: dict[str, GuidanceRule],
    *,
    batch: int,
    steps: int,
    weak: UNet2DConditionModel | None,
    warmup: int = 1,
    repeats: int = 5,
) -> dict[str, float]:
    """Median seconds per denoising step of ``generate`` with each rule (interleaved, same noise and batch)."""
    shape = latent_shape(sd, *resolve_size(sd, None, None), batch)

    def run(rule: GuidanceRule) -> Callable[[], object]:
        uses_weak = rule.uncond_branch == "weak"
        return lambda: generate(sd, denoiser, rule, shape, SamplingSettings(steps=steps, seed=0, diagnostics=False),
                                weak=weak if uses_weak else None)

    seconds = interleaved_medians({k: run(r) for k, r in rules.items()}, warmup, repeats, desc="method loops")
    return {k: v / steps for k, v in seconds.items()}


def rule_apply_costs(rules: dict[str, GuidanceRule], shape: tuple[int, ...], repeats: int = 7,
                     calls: int = 200) -> dict[str, float]:
    """Median seconds of one ``rule.apply`` (the combine step alone) on random predictions of ``shape``."""
    u, c, p, x_t = (torch.randn(shape) for _ in range(4))
    step = GuideStep(5, 10, torch.tensor(0.5), torch.tensor(0.6))

    def apply(rule: GuidanceRule) -> Callable[[], object]:
        # Every branch the rule evaluates at a guided step (its extra ones get the third random prediction).
        predictions = {b: {rule.uncond_branch: u, "cond": c}.get(b, p) for b in rule.branches_at(step.index, 10)}

        def run() -> list[Tensor]:
            state: dict = {}
            return [rule.guide_step(predictions, x_t, step.alpha_bar, step, state) for _ in range(calls)]
        return run

    seconds = interleaved_medians({k: apply(r) for k, r in rules.items()}, 1, repeats, desc="rule alone")
    return {k: v / calls for k, v in seconds.items()}


def toy_setup(prompt: str = PROMPT, batch: int = 8) -> tuple[SDComponents, UNetDenoiser, UNet2DConditionModel]:
    """The toy profile's UNet with ``batch`` rows of one prompt, and its autoguide UNet (CPU float32)."""
    profile, runtime = load_profile("toy"), pick_runtime("cpu", "float32")
    sd = load_role_sd(profile, runtime)
    states = encode_prompts(sd.tokenizer, sd.text_encoder, [prompt, ""], sd.device).states
    denoiser = UNetDenoiser(sd.unet, states[:1].repeat(batch, 1, 1), states[1:].repeat(batch, 1, 1))
    return sd, denoiser, load_autoguide(profile, runtime)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    # One thread: on a shared 2-core machine torch's second thread spin-waits and runs ~10x slower.
    parser.add_argument("--threads", type=int, default=1)
    return parser


def measure(args: argparse.Namespace) -> list[Row]:
    """One row per method: whole-loop step time over CFG's, and the rule's own cost over CFG's step."""
    torch.set_num_threads(args.threads)
    sd, denoiser, weak = toy_setup(batch=args.batch)
    loop = loop_step_costs(sd, denoiser, METHOD_RULES, batch=args.batch, steps=args.steps, weak=weak,
                           warmup=args.warmup, repeats=args.repeats)
    shape = latent_shape(sd, *resolve_size(sd, None, None), args.batch)
    alone = rule_apply_costs(METHOD_RULES, shape, repeats=args.repeats)
    cfg_step = loop["cfg"]
    setup = f"toy UNet, {shape[-1]}² px, batch {args.batch}, {args.steps} DDIM steps"
    rows = []
    for name in METHOD_RULES:
        if name == "cfg":
            continue
        extra = alone[name] - alone["cfg"]
        combine_only = name not in CALLS and not METHOD_RULES[name].options["threshold"]
        note = "combine only: goal ≤ 1.02" if combine_only else CALLS.get(name, "scheduler thresholds x̂0")
        rows.append(Row(f"{name} step / CFG step ({setup})", f"{loop[name] * 1000:.2f} ms",
                        f"{cfg_step * 1000:.2f} ms", loop[name] / cfg_step, note))
        if combine_only:
            rows.append(Row(f"{name} / CFG step from the rule's own cost (less noisy)", f"+{extra * 1e6:.0f} µs",
                            f"{cfg_step * 1000:.2f} ms", (cfg_step + extra) / cfg_step, "goal ≤ 1.02"))
    return rows


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    rows = measure(args)
    print(f"\n{run_header(torch.get_num_threads())}\n\nmedian of {args.repeats} interleaved runs, CPU float32\n")
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
