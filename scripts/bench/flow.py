"""Transformer text-to-image timings on tiny random models (no downloads), printed as a markdown table.

    HF_HUB_OFFLINE=1 .venv/bin/python -m scripts.bench.flow [--steps 10] [--repeats 7] [--threads 1]

Rows, per image, the same number of transformer calls on both sides:
- the rectified-flow path (``pipelines/flow.py``, SD3.5-medium's layout) vs diffusers' ``StableDiffusion3Pipeline``
  (goal ≤ 1.05, issue 27);
- the PixArt-Σ path (``pipelines/pixart.py``) vs ``PixArtSigmaPipeline``.
Each pipeline gets the very modules our loader loaded, so both sides run the same weights in the same memory.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from guidance.rules import GuidanceRule  # noqa: E402
from models.runtime import pick_runtime  # noqa: E402
from scripts.shared.bench import Row, interleaved_medians, markdown_table, run_header  # noqa: E402

PROMPT = "a red circle on the left"
SCALE = 4.5


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (both tiny models are native 64)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    return parser


def measure_sd3(args: argparse.Namespace) -> Row:
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    from models.loading.flow import load_flow
    from pipelines.flow import flow_to_image
    from testing.tiny_sd3 import build_tiny_sd3

    folder = build_tiny_sd3(Path(tempfile.mkdtemp(prefix="bench_sd3_")) / "stable-diffusion-3.5-medium")
    flow = load_flow(str(folder), pick_runtime("cpu", "float32"))
    pipe = StableDiffusion3Pipeline(
        transformer=flow.transformer, scheduler=FlowMatchEulerDiscreteScheduler.from_config(flow.scheduler_config),
        vae=flow.vae, text_encoder=flow.text_encoder, tokenizer=flow.tokenizer, text_encoder_2=flow.text_encoder_2,
        tokenizer_2=flow.tokenizer_2, text_encoder_3=flow.text_encoder_3, tokenizer_3=flow.tokenizer_3)
    pipe.set_progress_bar_config(disable=True)
    rule = GuidanceRule("cfg", SCALE)

    def ours() -> object:
        return flow_to_image(flow, PROMPT, rule=rule, steps=args.steps, seed=0, width=args.size, height=args.size,
                             diagnostics=False)

    def theirs() -> object:
        return pipe(PROMPT, guidance_scale=SCALE, num_inference_steps=args.steps, height=args.size, width=args.size,
                    generator=torch.Generator().manual_seed(0), output_type="pt")

    times = interleaved_medians({"diffusers": theirs, "ours": ours}, args.warmup, args.repeats, desc="sd3")
    return Row(f"flow text-to-image: our loop / StableDiffusion3Pipeline (tiny SD3.5 layout, {args.size}² px, "
               f"{args.steps} Euler steps, CFG, {2 * args.steps} transformer rows each)", fmt_ms(times["ours"]),
               fmt_ms(times["diffusers"]), times["ours"] / times["diffusers"], "goal ≤ 1.05")


def measure_pixart(args: argparse.Namespace) -> Row:
    import diffusers
    from diffusers import PixArtSigmaPipeline

    from models.loading.pixart import load_pixart
    from pipelines.pixart import pixart_to_image
    from testing.tiny_pixart import build_tiny_pixart

    transformer_folder, base_folder = build_tiny_pixart(Path(tempfile.mkdtemp(prefix="bench_pixart_")))
    pixart = load_pixart(str(transformer_folder), str(base_folder), pick_runtime("cpu", "float32"))
    scheduler_class = getattr(diffusers, pixart.scheduler_config["_class_name"])
    pipe = PixArtSigmaPipeline(transformer=pixart.transformer, text_encoder=pixart.text_encoder,
                               tokenizer=pixart.tokenizer, vae=pixart.vae,
                               scheduler=scheduler_class.from_config(pixart.scheduler_config))
    pipe.set_progress_bar_config(disable=True)
    rule = GuidanceRule("cfg", SCALE)

    def ours() -> object:
        return pixart_to_image(pixart, PROMPT, rule=rule, steps=args.steps, seed=0, width=args.size,
                               height=args.size, diagnostics=False)

    def theirs() -> object:
        return pipe(PROMPT, guidance_scale=SCALE, num_inference_steps=args.steps, height=args.size, width=args.size,
                    generator=torch.Generator().manual_seed(0), output_type="pt", clean_caption=False,
                    use_resolution_binning=False)

    times = interleaved_medians({"diffusers": theirs, "ours": ours}, args.warmup, args.repeats, desc="pixart")
    return Row(f"PixArt-Σ text-to-image: our loop / PixArtSigmaPipeline (tiny, {args.size}² px, {args.steps} "
               f"DPM-Solver steps, CFG)", fmt_ms(times["ours"]), fmt_ms(times["diffusers"]),
               times["ours"] / times["diffusers"], "")


def measure(args: argparse.Namespace) -> list[Row]:
    torch.set_num_threads(args.threads)
    return [measure_sd3(args), measure_pixart(args)]


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    rows = measure(args)
    print(f"{run_header(torch.get_num_threads())}\n\n{markdown_table(rows)}")


if __name__ == "__main__":
    main()
