"""Our ControlNet loop vs diffusers' StableDiffusionControlNetPipeline on tiny random models (CPU).

    .venv/bin/python -m scripts.bench.controlnet [--steps 10] [--repeats 3] [--size 64] [--threads 1]

Prints a Markdown table of median wall-clock per call (interleaved runs) and the ratio ours / diffusers
(goal ≤ 1.00).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from guidance.rules import GuidanceRule
from models.loading.controlnet import load_controlnet
from models.loading.sd import load_sd
from models.runtime import pick_runtime
from pipelines.controlnet import ControlSpec, controlnet_to_image
from pipelines.schedulers import make_scheduler
from scripts.shared.bench import Row, interleaved_medians, markdown_table, run_header
from testing.tiny import build_tiny_controlnet, build_tiny_sd


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--size", type=int, default=64)
    # One thread: on a shared 2-core machine torch's second thread spin-waits and runs ~10x slower.
    ap.add_argument("--threads", type=int, default=1)
    return ap


def measure(args: argparse.Namespace) -> list[Row]:
    """Our ``controlnet_to_image`` vs StableDiffusionControlNetPipeline, same models, seed and scheduler."""
    from diffusers import StableDiffusionControlNetPipeline

    torch.set_num_threads(args.threads)
    cpu = pick_runtime("cpu", "float32")
    with tempfile.TemporaryDirectory() as tmp:
        sd_dir = build_tiny_sd(Path(tmp) / "sd")
        sd = load_sd(str(sd_dir), cpu)
        net = load_controlnet(str(build_tiny_controlnet(Path(tmp) / "cn", sd_dir)), cpu)
        edges = np.where(np.random.default_rng(0).random((args.size, args.size)) > 0.8, 255, 0).astype(np.uint8)
        cmap = Image.fromarray(np.stack([edges] * 3, -1))
        pipe = StableDiffusionControlNetPipeline(
            vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer, unet=sd.unet, controlnet=net,
            scheduler=make_scheduler("ddim", sd.scheduler_config), safety_checker=None, feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        kw = dict(height=args.size, width=args.size)

        def theirs() -> None:
            pipe("a red cat", image=cmap, guidance_scale=7.5, num_inference_steps=args.steps, output_type="pt",
                 generator=torch.Generator("cpu").manual_seed(0), **kw)  # fmt: skip

        def ours(diagnostics: bool = False) -> None:
            controlnet_to_image(sd, [ControlSpec(net, cmap)], "a red cat", rule=GuidanceRule("cfg", 7.5),
                                steps=args.steps, seed=0, diagnostics=diagnostics, **kw)  # fmt: skip

        t = interleaved_medians({"diffusers": theirs, "ours": ours, "ours_diag": lambda: ours(True)},
                                args.warmup, args.repeats, desc="controlnet")  # fmt: skip
    return [Row(f"ControlNet: our loop / StableDiffusionControlNetPipeline (tiny SD + tiny ControlNet, "
                f"{args.size}² px, {args.steps} DDIM steps, CFG)", f"{t['ours'] * 1000:.0f} ms",
                f"{t['diffusers'] * 1000:.0f} ms", t["ours"] / t["diffusers"], "goal ≤ 1.00"),
            Row("same, with per-step diagnostics (as the app runs)", f"{t['ours_diag'] * 1000:.0f} ms",
                f"{t['diffusers'] * 1000:.0f} ms", t["ours_diag"] / t["diffusers"], "")]


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    rows = measure(args)
    print(f"{run_header(torch.get_num_threads())}\n\nmedian of {args.repeats} interleaved runs\n")
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
