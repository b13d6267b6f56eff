"""An SD3 MM-DiT (``SD3Transformer2DModel``) wrapped for the one sampler loop (``guidance.sampler.Denoiser``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from guidance.sampler import ModelCall
from models.runtime import row_budget

if TYPE_CHECKING:
    from diffusers import SD3Transformer2DModel

BRANCHES = ("uncond", "cond")
# What the loop's other branches are for, to say which methods cannot run here.
NEEDED_BY = {"weak": "autoguidance (a weaker version of the same model)",
             "perturbed": "PAG (self-attention maps perturbed to identity)"}


def check_branches(branches: Iterable[str]) -> None:
    """``ValueError`` naming the methods that need a branch this model cannot run (only uncond and cond exist)."""
    missing = sorted(set(branches) - set(BRANCHES))
    if missing:
        needs = "; ".join(f"'{b}' is needed by {NEEDED_BY.get(b, 'an unknown method')}" for b in missing)
        raise ValueError(f"this rectified-flow model runs only the uncond and cond branches: {needs}, which is not "
                         "available for this model; choose another method or switch that modifier off")


class FlowDenoiser:
    """A rectified-flow transformer with fixed text conditioning per branch; it returns the velocity v = ε − x0.

    SD3 conditions each row twice (Esser et al. 2024): per-token states ``[B, tokens, joint width]`` in the joint
    attention, and a pooled vector ``[B, pooled width]`` with the timestep in AdaLN. ``"cond"`` rows get the prompt's,
    ``"uncond"`` rows the negative prompt's (SD3's unconditional branch is the empty prompt). The branches run in one
    transformer call, as ``StableDiffusion3Pipeline`` batches ``cat([latents] * 2)`` with the timestep broadcast over
    the rows, in chunks of at most ``max_rows`` (rows are independent, so chunks change memory, not results).
    Contexts with one row serve every image of the batch.
    """

    def __init__(self, transformer: SD3Transformer2DModel, cond_tokens: Tensor, cond_pooled: Tensor,
                 uncond_tokens: Tensor | None = None, uncond_pooled: Tensor | None = None,
                 max_rows: int | None = None):
        if (uncond_tokens is None) != (uncond_pooled is None):
            raise ValueError("the unconditional branch needs both its token states and its pooled vector")
        self.transformer = transformer
        self.tokens = {"cond": cond_tokens, "uncond": uncond_tokens}
        self.pooled = {"cond": cond_pooled, "uncond": uncond_pooled}
        self.max_rows = max_rows if max_rows is not None else row_budget()
        self.dtype = transformer.dtype  # read once: diffusers' ``.dtype`` walks every module (~1 ms a call)

    def contexts(self, call: ModelCall, per_branch: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """The token states and pooled vectors of every row, stacked in the call's branch order."""
        check_branches(call.branches)
        if any(self.tokens[b] is None for b in call.branches):
            raise ValueError("this guidance rule needs the unconditional branch (a negative or empty prompt)")
        tokens = torch.cat([_rows(self.tokens[b], per_branch) for b in call.branches])
        pooled = torch.cat([_rows(self.pooled[b], per_branch) for b in call.branches])
        return tokens.to(device=device, dtype=self.dtype), pooled.to(device=device, dtype=self.dtype)

    def __call__(self, x: Tensor, t: Tensor, call: ModelCall) -> Tensor:
        tokens, pooled = self.contexts(call, x.shape[0] // len(call.branches), x.device)
        step = self.max_rows or x.shape[0]
        chunks = []
        for first in range(0, x.shape[0], step):
            rows = slice(first, min(first + step, x.shape[0]))
            timestep = torch.as_tensor(t, device=x.device).reshape(-1).expand(rows.stop - rows.start)
            chunks.append(self.transformer(hidden_states=x[rows], timestep=timestep, encoder_hidden_states=tokens[rows],
                                           pooled_projections=pooled[rows], return_dict=False)[0])
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks)


def _rows(context: Tensor, count: int) -> Tensor:
    """``context`` with ``count`` rows: as given, or its one row repeated."""
    if context.shape[0] == count:
        return context
    if context.shape[0] == 1:
        return context.expand(count, *context.shape[1:])
    raise ValueError(f"a context has {context.shape[0]} rows for a batch of {count}")
