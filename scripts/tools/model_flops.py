"""Forward FLOPs per image and step of the full profile's text-to-image denoisers, counted on the meta device.

    .venv/bin/python -m scripts.tools.model_flops          # ~5 min on one CPU core, no downloads

Each network is built on the meta device from its published configuration (``scripts.tools.model_memory``'s
builders) and called once under ``torch.utils.flop_counter.FlopCounterMode`` at 512² and 1024² with its own text
length (SD 1.5: 77 CLIP tokens; PixArt-Σ: 300 T5 tokens; SD3.5: 77 CLIP + 256 T5 tokens). The ratio to SD 1.5's UNet
at the same size is the ``work`` factor ``tasks/text_models.py`` uses to scale ZeroGPU budgets per model (the
budget is written in SD 1.5 megapixel-steps).
"""

from __future__ import annotations

import os
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from tqdm import tqdm  # noqa: E402

from scripts.tools.model_memory import pixart_transformer, sd15_unet, sd35_transformer  # noqa: E402

SIZES = (512, 1024)


def count_flops(build: Callable[[], torch.nn.Module], call: Callable[[torch.nn.Module, int], object],
                size: int) -> int:
    with torch.device("meta"):
        model = build()
        with FlopCounterMode(display=False) as counter:
            call(model, size // 8)  # every one of these models works on an 8× downsampled latent
    return counter.get_total_flops()


def sd15(model: torch.nn.Module, side: int) -> object:
    return model(torch.randn(1, 4, side, side), torch.tensor([500]), encoder_hidden_states=torch.randn(1, 77, 768))


def pixart(model: torch.nn.Module, side: int) -> object:
    return model(torch.randn(1, 4, side, side), encoder_hidden_states=torch.randn(1, 300, 4096),
                 timestep=torch.tensor([500]), added_cond_kwargs={"resolution": None, "aspect_ratio": None})


def sd35(model: torch.nn.Module, side: int) -> object:
    return model(hidden_states=torch.randn(1, 16, side, side), timestep=torch.tensor([500.0]),
                 encoder_hidden_states=torch.randn(1, 77 + 256, 4096), pooled_projections=torch.randn(1, 2048))


NETWORKS = {"sd": ("SD 1.5 UNet", sd15_unet, sd15),
            "pixart": ("PixArt-Σ 512-MS transformer", pixart_transformer, pixart),
            "flow": ("SD3.5 Medium MM-DiT", sd35_transformer, sd35)}


def main() -> None:
    flops = {(role, size): count_flops(build, call, size)
             for role, (_, build, call) in tqdm(NETWORKS.items(), desc="networks") for size in SIZES}
    print("| role | network | " + " | ".join(f"TFLOPs/image-step at {s}²" for s in SIZES)
          + " | " + " | ".join(f"× SD 1.5 at {s}²" for s in SIZES) + " |")
    print("|---|---|" + "---:|" * (2 * len(SIZES)))
    for role, (name, _, _) in NETWORKS.items():
        values = " | ".join(f"{flops[role, s] / 1e12:.2f}" for s in SIZES)
        ratios = " | ".join(f"{flops[role, s] / flops['sd', s]:.2f}" for s in SIZES)
        print(f"| {role} | {name} | {values} | {ratios} |")


if __name__ == "__main__":
    main()
