"""Text-to-image timings on the tiny SD model (no downloads), printed as a markdown table.

    HF_HUB_OFFLINE=1 .venv/bin/python -m scripts.bench.t2i [--steps 20] [--size 64] [--repeats 7] [--threads 1]

Rows: our loop vs diffusers' StableDiffusionPipeline (same scheduler, seed and size; goal ≤ 1.00),
Perp-CFG step time over CFG step time (goal ≤ 1.02), and the batched guidance sweep over the same
cells run one by one (goal: clearly below 1). Each timing is the median of ``--repeats`` interleaved runs after
``--warmup`` runs (``scripts.shared.bench.interleaved_medians``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from guidance.rules import GuidanceRule  # noqa: E402
from guidance.sampler import sample  # noqa: E402
from models.adapters.denoisers import UNetDenoiser  # noqa: E402
from models.loading.sd import load_sd  # noqa: E402
from models.runtime import cpu_generator, pick_runtime  # noqa: E402
from pipelines.schedulers import make_scheduler  # noqa: E402
from pipelines.sweep import guidance_sweep  # noqa: E402
from pipelines.text_to_image import text_to_image  # noqa: E402
from scripts.shared.bench import Row, interleaved_medians, markdown_table, run_header  # noqa: E402
from testing.tiny import build_tiny_sd  # noqa: E402

PROMPT = "a photo of a red cat"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--scales", default="1,3,7.5,12,20")
    # One thread: on a shared 2-core machine torch's second thread spin-waits and runs ~10x slower.
    parser.add_argument("--threads", type=int, default=1)
    return parser


def measure(args: argparse.Namespace) -> list[Row]:
    """Our loop vs StableDiffusionPipeline, Perp-CFG vs CFG step, batched sweep vs sequential."""
    torch.set_num_threads(args.threads)
    from diffusers import StableDiffusionPipeline

    folder = build_tiny_sd(Path(tempfile.mkdtemp(prefix="bench_t2i_")) / "sd")
    runtime = pick_runtime("cpu", "float32")
    sd = load_sd(str(folder), runtime)
    # The pipeline gets our loaded modules, so both sides run the very same weights in the same memory.
    pipe = StableDiffusionPipeline(
        vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer, unet=sd.unet,
        scheduler=make_scheduler("ddim", sd.scheduler_config), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    common = dict(steps=args.steps, width=args.size, height=args.size, seed=0, scheduler="ddim")
    cfg_rule = GuidanceRule("cfg", 7.5)

    def ours(diagnostics: bool) -> Callable[[], object]:
        return lambda: text_to_image(sd, PROMPT, rule=cfg_rule, diagnostics=diagnostics, **common)

    def theirs() -> object:
        return pipe(PROMPT, guidance_scale=7.5, num_inference_steps=args.steps, height=args.size, width=args.size,
                    generator=torch.Generator("cpu").manual_seed(0), output_type="pt")

    loop = interleaved_medians({"diffusers": theirs, "ours": ours(False), "ours+diag": ours(True)},
                               args.warmup, args.repeats)

    # Step time of the rule alone in context: the same loop and UNet, only the rule differs.
    from condition.text import encode_prompts

    text = encode_prompts(sd.tokenizer, sd.text_encoder, [PROMPT, ""], sd.device)
    latent = args.size // sd.vae_scale_factor
    shape = (1, sd.unet.config.in_channels, latent, latent)

    def loop_only(rule: GuidanceRule) -> Callable[[], object]:
        def run() -> object:
            denoiser = UNetDenoiser(sd.unet, text.states[:1], text.states[1:])
            noise = torch.randn(shape, generator=cpu_generator(0))
            return sample(denoiser, make_scheduler("ddim", sd.scheduler_config), noise, rule,
                          steps=args.steps, diagnostics=False)
        return run

    rules = interleaved_medians({"cfg": loop_only(cfg_rule), "perp": loop_only(GuidanceRule("perp-cfg", 7.5))},
                                args.warmup, args.repeats)

    # The rule alone, many times on the real latent shape: precise where whole-loop timings are noisy.
    u, c = torch.randn(shape), torch.randn(shape)
    perp_rule = GuidanceRule("perp-cfg", 7.5)

    def rule_cost(rule: GuidanceRule, n: int = 200) -> Callable[[], object]:
        return lambda: [rule.apply(u, c) for _ in range(n)]

    apply = {k: v / 200 for k, v in interleaved_medians(
        {"cfg": rule_cost(cfg_rule), "perp": rule_cost(perp_rule)}, 1, args.repeats).items()}
    cfg_step = rules["cfg"] / args.steps
    derived = (cfg_step + apply["perp"] - apply["cfg"]) / cfg_step

    scales = [float(s) for s in args.scales.split(",")]
    cells = [(r, s) for r in ("cfg", "perp-cfg") for s in scales]

    def sequential() -> object:
        return [text_to_image(sd, PROMPT, rule=GuidanceRule(r, s), diagnostics=False, **common) for r, s in cells]

    def batched() -> object:
        return guidance_sweep(sd, PROMPT, scales, diagnostics=False, **common)

    sweep = interleaved_medians({"sequential": sequential, "batched": batched}, 1, max(3, args.repeats // 2))

    step = lambda seconds: f"{seconds / args.steps * 1000:.2f} ms"  # noqa: E731
    setup = f"tiny SD, {args.size}² px, {args.steps} DDIM steps"
    return [
        Row(f"text-to-image: our loop / StableDiffusionPipeline ({setup}, CFG)", fmt_ms(loop["ours"]),
            fmt_ms(loop["diffusers"]), loop["ours"] / loop["diffusers"], "goal ≤ 1.00"),
        Row("same, with per-step diagnostics (as the app runs)", fmt_ms(loop["ours+diag"]),
            fmt_ms(loop["diffusers"]), loop["ours+diag"] / loop["diffusers"], ""),
        Row(f"Perp-CFG step / CFG step ({setup}, whole loop)", step(rules["perp"]), step(rules["cfg"]),
            rules["perp"] / rules["cfg"], "goal ≤ 1.02"),
        Row("Perp-CFG / CFG step from the rule's own cost (less noisy)",
            f"+{(apply['perp'] - apply['cfg']) * 1e6:.0f} µs", f"{cfg_step * 1000:.2f} ms", derived, "goal ≤ 1.02"),
        Row(f"guidance sweep: {len(cells)} cells batched / sequential ({setup})", fmt_ms(sweep["batched"]),
            fmt_ms(sweep["sequential"]), sweep["batched"] / sweep["sequential"], "goal clearly < 1"),
    ]


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    rows = measure(args)
    print(f"\n{run_header(torch.get_num_threads())}\n\nmedian of {args.repeats} interleaved runs "
          f"(sweep {max(3, args.repeats // 2)}), CPU float32\n")
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
