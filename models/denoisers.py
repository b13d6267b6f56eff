"""Denoisers: models wrapped for the one sampler loop (see ``guidance.sampler.Denoiser``)."""

from __future__ import annotations

import torch
from torch import Tensor

from guidance.sampler import ModelCall


class UNetDenoiser:
    """A ``UNet2DConditionModel`` with a fixed context per branch.

    ``cond`` / ``uncond`` are the cross-attention contexts ``[B, tokens, width]`` (text
    states, or image embeddings as one token). The loop stacks the input per branch; the
    matching contexts are stacked the same way so both branches run in one UNet call.
    """

    def __init__(self, unet, cond: Tensor, uncond: Tensor | None = None, cross_attention_kwargs: dict | None = None):
        self.unet = unet
        self.context = {"cond": cond, "uncond": uncond}
        self.cross_attention_kwargs = cross_attention_kwargs

    def contexts(self, call: ModelCall) -> Tensor:
        parts = [self.context[b] for b in call.branches]
        if any(p is None for p in parts):
            raise ValueError("this guidance rule needs an unconditional context")
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def __call__(self, x: Tensor, t: Tensor, call: ModelCall) -> Tensor:
        return self.unet(
            x, t, encoder_hidden_states=self.contexts(call), cross_attention_kwargs=self.cross_attention_kwargs,
            return_dict=False,
        )[0]
