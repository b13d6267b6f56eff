"""Our image-variations loop vs diffusers' StableDiffusionImageVariationPipeline on tiny random models.

    python scripts/bench/image.py [--steps 10] [--size 32] [--images 2] [--repeats 5] [--threads 1]

Both sides get the same preprocessed pixels, seed, scheduler (DDIM) and CFG scale; the script
checks that the images agree, then prints median wall-clock per call (interleaved runs) and the ratio.
Diagnostics are off on our side so both loops do the same work.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Also runnable as a plain file path, where the project root is not on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from guidance.rules import GuidanceRule  # noqa: E402
from models.loading.image import load_variations_source
from models.runtime import pick_runtime  # noqa: E402
from pipelines.image_conditioning import variation_pixels, variations  # noqa: E402
from scripts.shared.bench import Row, interleaved_medians, markdown_table, run_header  # noqa: E402
from testing.tiny import build_tiny_image_models  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    # One thread: on a shared 2-core machine torch's second thread spin-waits and runs ~10x slower.
    parser.add_argument("--threads", type=int, default=1)
    return parser


def measure(args: argparse.Namespace) -> list[Row]:
    """Our ``variations`` vs StableDiffusionImageVariationPipeline; the note carries max |ours − theirs|."""
    from diffusers import StableDiffusionImageVariationPipeline

    torch.set_num_threads(args.threads)
    runtime = pick_runtime("cpu", "float32")
    folder = build_tiny_image_models(Path(tempfile.mkdtemp(prefix="bench-image-")))["variations"]
    vsd = load_variations_source(str(folder), runtime)
    pipe = StableDiffusionImageVariationPipeline.from_pretrained(folder, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(0)
    photo = Image.fromarray((rng.random((48, 48, 3)) * 255).astype(np.uint8))
    pixels = variation_pixels(vsd, photo)
    common = dict(steps=args.steps, width=args.size, height=args.size, num_images=args.images, seed=0)

    def ours() -> torch.Tensor:
        return variations(vsd, pixels=pixels, rule=GuidanceRule("cfg", 3.0), diagnostics=False, **common).images

    def theirs() -> torch.Tensor:
        return pipe(pixels, guidance_scale=3.0, num_inference_steps=args.steps, height=args.size, width=args.size,
                    num_images_per_prompt=args.images, output_type="pt",
                    generator=torch.Generator("cpu").manual_seed(0)).images

    diff = (ours() - theirs()).abs().max().item()
    t = interleaved_medians({"diffusers": theirs, "ours": ours}, args.warmup, args.repeats, desc="variations")
    return [Row(f"image variations: our loop / StableDiffusionImageVariationPipeline (tiny, {args.size}² px, "
                f"{args.steps} DDIM steps, CFG 3, {args.images} images)", f"{t['ours'] * 1000:.0f} ms",
                f"{t['diffusers'] * 1000:.0f} ms", t["ours"] / t["diffusers"],
                f"goal ≤ 1.00; max abs diff {diff:.1e}")]


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    rows = measure(args)
    print(f"{run_header(torch.get_num_threads())}\n\nmedian of {args.repeats} interleaved runs\n")
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
