"""A ControlNet's layout: the map embedding's downsampling, and the zero convolutions joining it to the UNet."""

from __future__ import annotations

import math

import torch


def embedding_channels(downsample: int) -> tuple[int, ...]:
    """Conditioning-embedding widths whose stride-2 convs shrink a map by ``downsample`` (1, 2, 4 or 8).

    diffusers' default (16, 32, 96, 256) has three stride-2 convs: the ×8 of SD's VAE.
    """
    steps = int(round(math.log2(downsample))) if downsample >= 1 else -1
    if steps < 0 or 2**steps != downsample or steps > 3:
        raise ValueError(f"the control map can be downsampled by 1, 2, 4 or 8, not {downsample}")
    return (16, 32, 96, 256)[: steps + 1]


def zero_convs(controlnet) -> list[tuple[str, torch.nn.Conv2d]]:
    """The 1×1 zero convolutions that join the ControlNet to the UNet (down blocks, then mid)."""
    named = [(f"down[{i}]", m) for i, m in enumerate(controlnet.controlnet_down_blocks)]
    return named + [("mid", controlnet.controlnet_mid_block)]
