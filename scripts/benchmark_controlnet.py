"""Our ControlNet loop vs diffusers' StableDiffusionControlNetPipeline on tiny random models (CPU).

    .venv/bin/python -m scripts.benchmark_controlnet [--steps 10] [--repeats 3] [--size 64]

Prints a Markdown table of median wall-clock seconds and the ratio ours / diffusers (goal ≤ 1.00).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusionControlNetPipeline
from PIL import Image

from guidance.rules import GuidanceRule
from models.controlnet_loading import build_tiny_controlnet, load_controlnet
from models.loading import load_sd
from models.runtime import pick_runtime
from models.tiny import build_tiny_sd
from pipelines.controlnet import ControlSpec, controlnet_to_image
from pipelines.schedulers import make_scheduler


def _median(fn, repeats: int) -> float:
    fn()  # warm-up: first-call allocations are not what we compare
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
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

        def theirs():
            pipe("a red cat", image=cmap, guidance_scale=7.5, num_inference_steps=args.steps, output_type="pt",
                 generator=torch.Generator("cpu").manual_seed(0), **kw)  # fmt: skip

        def ours():
            controlnet_to_image(sd, [ControlSpec(net, cmap)], "a red cat", rule=GuidanceRule("cfg", 7.5),
                                steps=args.steps, seed=0, **kw)  # fmt: skip

        t_ours, t_theirs = _median(ours, args.repeats), _median(theirs, args.repeats)
    print(f"ControlNet, tiny SD + tiny ControlNet, {args.size}×{args.size}, {args.steps} DDIM steps, CFG, "
          f"median of {args.repeats}, torch {torch.__version__}, {torch.get_num_threads()} threads")  # fmt: skip
    print("| path | seconds | ratio |\n|---|---|---|")
    print(f"| ours (`controlnet_to_image`) | {t_ours:.3f} | {t_ours / t_theirs:.2f} |")
    print(f"| diffusers `StableDiffusionControlNetPipeline` | {t_theirs:.3f} | 1.00 |")


if __name__ == "__main__":
    main()
