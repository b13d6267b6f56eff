"""Denoisers: models wrapped for the one sampler loop (see ``guidance.sampler.Denoiser``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from guidance.sampler import ModelCall
from models.runtime import row_budget

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel


class UNetDenoiser:
    """A ``UNet2DConditionModel`` with a fixed context per branch.

    ``cond`` / ``uncond`` are the cross-attention contexts ``[B, tokens, width]`` (text
    states, or image embeddings as one token). The loop stacks the input per branch; the
    matching contexts are stacked the same way so both branches run in one UNet call.
    """

    def __init__(self, unet: UNet2DConditionModel, cond: Tensor, uncond: Tensor | None = None,
                 cross_attention_kwargs: dict | None = None, max_rows: int | None = None):
        self.unet = unet
        self.context = {"cond": cond, "uncond": uncond}
        self.cross_attention_kwargs = cross_attention_kwargs
        # At most this many rows per UNet call (memory): rows are independent, so chunks give the same result.
        self.max_rows = max_rows if max_rows is not None else row_budget()

    def contexts(self, call: ModelCall) -> Tensor:
        parts = [self.context[b] for b in call.branches]
        if any(p is None for p in parts):
            raise ValueError("this guidance rule needs an unconditional context")
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def __call__(self, x: Tensor, t: Tensor, call: ModelCall) -> Tensor:
        rows = x.shape[0]
        step = self.max_rows or rows
        chunks = [self.forward_rows(x[i:i + step], t, call, slice(i, min(i + step, rows)))
                  for i in range(0, rows, step)]
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks)

    def forward_rows(self, x: Tensor, t: Tensor, call: ModelCall, rows: slice) -> Tensor:
        """The model on the branch-stacked rows ``rows`` (``x`` holds just those rows)."""
        return self.unet(
            x, t, encoder_hidden_states=self.contexts(call)[rows], cross_attention_kwargs=self.cross_attention_kwargs,
            return_dict=False,
        )[0]
