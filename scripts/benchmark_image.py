"""Our image-variations loop vs diffusers' StableDiffusionImageVariationPipeline on tiny random models.

    python scripts/benchmark_image.py [--steps 10] [--size 32] [--images 2] [--repeats 5]

Both sides get the same preprocessed pixels, seed, scheduler (DDIM) and CFG scale; the script
checks that the images agree, then prints median wall-clock per call and the ratio.
Diagnostics are off on our side so both loops do the same work.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from guidance.rules import GuidanceRule  # noqa: E402
from models.image_loading import build_tiny_image_models, load_variations_source  # noqa: E402
from models.runtime import pick_runtime  # noqa: E402
from pipelines.image_conditioning import variation_pixels, variations  # noqa: E402


def _median_seconds(fns: dict, repeats: int) -> dict[str, float]:
    """Median time per function, calls interleaved so a busy machine slows both sides alike."""
    for fn in fns.values():
        fn()  # warm-up: first calls pay for lazy kernel and allocator set-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    from diffusers import StableDiffusionImageVariationPipeline

    runtime = pick_runtime("cpu", "float32")
    folder = build_tiny_image_models(Path(tempfile.mkdtemp(prefix="bench-image-")))["variations"]
    vsd = load_variations_source(str(folder), runtime)
    pipe = StableDiffusionImageVariationPipeline.from_pretrained(folder, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(0)
    photo = Image.fromarray((rng.random((48, 48, 3)) * 255).astype(np.uint8))
    pixels = variation_pixels(vsd, photo)
    common = dict(steps=args.steps, width=args.size, height=args.size, num_images=args.images, seed=0)

    def ours():
        return variations(vsd, pixels=pixels, rule=GuidanceRule("cfg", 3.0), diagnostics=False, **common).images

    def theirs():
        return pipe(pixels, guidance_scale=3.0, num_inference_steps=args.steps, height=args.size, width=args.size,
                    num_images_per_prompt=args.images, output_type="pt",
                    generator=torch.Generator("cpu").manual_seed(0)).images

    diff = (ours() - theirs()).abs().max().item()
    medians = _median_seconds({"ours": ours, "theirs": theirs}, args.repeats)
    t_ours, t_theirs = medians["ours"], medians["theirs"]
    print(f"image variations, tiny model, {args.size}x{args.size}, {args.steps} DDIM steps, CFG 3.0, "
          f"{args.images} images, median of {args.repeats}, torch threads {torch.get_num_threads()}")
    print(f"max |ours - diffusers| = {diff:.2e}")
    print("| loop | s / call | ratio |")
    print("|---|---|---|")
    print(f"| StableDiffusionImageVariationPipeline | {t_theirs:.3f} | 1.00 |")
    print(f"| our loop (variations) | {t_ours:.3f} | {t_ours / t_theirs:.2f} |")


if __name__ == "__main__":
    main()
