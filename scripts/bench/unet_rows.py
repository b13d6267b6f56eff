"""What a second batch row costs the toy UNet on this machine: one row against two, interleaved.

    HF_HUB_OFFLINE=1 .venv/bin/python -m scripts.bench.unet_rows [--model assets/toy/sd] [--threads 1]

Explains the distilled student's time ratio (docs/results.md, "Guidance distillation"): the student halves the UNet
rows of CFG, but a call's time halves only where its cost grows with its rows.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

ROOT = Path(__file__).resolve().parents[2]


def seconds_per_call(unet: UNet2DConditionModel, rows: int, calls: int, states: torch.Tensor) -> float:
    size = unet.config.sample_size
    sample = torch.randn(rows, unet.config.in_channels, size, size)
    encoder_states = states.expand(rows, -1, -1)
    started = time.perf_counter()
    with torch.no_grad():
        for _ in range(calls):
            unet(sample, 500, encoder_states)
    return (time.perf_counter() - started) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "assets" / "toy" / "sd")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calls", type=int, default=25, help="forwards per timing (a 25-step run)")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    unet = UNet2DConditionModel.from_pretrained(args.model, subfolder="unet", torch_dtype=torch.float32).eval()
    states = torch.randn(1, 77, unet.config.cross_attention_dim)
    for rows in (1, 2):  # warm-up
        seconds_per_call(unet, rows, 3, states)
    timings: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.rounds):
        for rows in (1, 2):
            timings[rows].append(seconds_per_call(unet, rows, args.calls, states))
    one, two = statistics.median(timings[1]), statistics.median(timings[2])
    print(f"UNet forward ({args.threads} thread(s), median of {args.rounds} interleaved rounds of {args.calls}): "
          f"1 row {one * 1e3:.2f} ms, 2 rows {two * 1e3:.2f} ms, ratio {one / two:.2f}; "
          f"{args.calls} calls: {args.calls * one:.3f} s vs {args.calls * two:.3f} s")


if __name__ == "__main__":
    main()
