"""PixArt-Σ's transformer as a denoiser for the one sampler loop (see ``guidance.sampler.Denoiser``).

Each branch is a text context: the conditional rows attend to the prompt's T5 states, the unconditional rows to the
negative prompt's, each with its own padding mask, so two prompts of different lengths mask differently. All rows of
all branches run in one transformer call (in chunks of the row budget), as ``PixArtSigmaPipeline`` batches
[negative, positive]; the timestep is the same for every row, and the resolution / aspect-ratio micro-conditions are
off (``None``), as the Σ pipeline passes them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from guidance.sampler import ModelCall
from models.runtime import row_budget

if TYPE_CHECKING:
    from diffusers import PixArtTransformer2DModel

BRANCHES = ("uncond", "cond")
# Branches other methods need, and why this model cannot give them.
UNSUPPORTED = {
    "weak": "autoguidance needs its 'weak' branch, a weaker PixArt-Σ model, which this tab does not load",
    "perturbed": "PAG needs its 'perturbed' branch, the transformer with perturbed self-attention, which is wired "
                 "for the SD UNet only",
}


def refuse_branches(branches: tuple[str, ...] | set[str]) -> None:
    """``ValueError`` naming the methods whose branches PixArt-Σ cannot evaluate here (autoguidance, PAG)."""
    unknown = [b for b in branches if b not in BRANCHES]
    if unknown:
        reasons = "; ".join(UNSUPPORTED.get(b, f"no {b!r} branch exists") for b in dict.fromkeys(unknown))
        raise ValueError(f"PixArt-Σ evaluates the uncond and cond branches only: {reasons}. Use a rule on those two "
                         "(cfg, perp-cfg, apg, cfg-zero-star, tcfg, cfg++, none) without pag_scale.")


class PixArtDenoiser:
    """A ``PixArtTransformer2DModel`` with a fixed T5 context and mask per branch.

    ``cond`` / ``uncond``: states ``[B, L, width]`` with masks ``[B, L]`` (1 token, 0 padding), one row per image.
    ``channels`` keeps the first output channels only (None: all): PixArt-Σ predicts ε and a variance (2 × 4
    channels), and a scheduler without a learned variance takes ε alone, as the pipeline splits it.
    """

    def __init__(self, transformer: PixArtTransformer2DModel, cond: Tensor, cond_mask: Tensor, uncond: Tensor,
                 uncond_mask: Tensor, channels: int | None = None, max_rows: int | None = None):
        if cond.shape != uncond.shape or cond_mask.shape != uncond_mask.shape or cond.shape[:2] != cond_mask.shape:
            raise ValueError(f"cond {tuple(cond.shape)} / mask {tuple(cond_mask.shape)} and uncond "
                             f"{tuple(uncond.shape)} / mask {tuple(uncond_mask.shape)} must match")
        self.transformer = transformer
        self.context = {"cond": (cond, cond_mask), "uncond": (uncond, uncond_mask)}
        self.channels = channels
        # At most this many rows per call (memory): rows are independent, so chunks give the same result.
        self.max_rows = max_rows if max_rows is not None else row_budget()
        self.dtype = transformer.dtype  # read once: diffusers' ``.dtype`` walks every module (~1 ms a call)

    def contexts(self, branches: tuple[str, ...]) -> tuple[Tensor, Tensor]:
        """The branch-stacked states and masks, in the order the loop stacked the input."""
        refuse_branches(branches)
        states = torch.cat([self.context[b][0] for b in branches])
        masks = torch.cat([self.context[b][1] for b in branches])
        return states, masks

    def __call__(self, x: Tensor, t: Tensor, call: ModelCall) -> Tensor:
        states, masks = self.contexts(call.branches)
        if states.shape[0] != x.shape[0]:
            raise ValueError(f"the input has {x.shape[0]} rows, the {len(call.branches)} branches' contexts "
                             f"{states.shape[0]}")
        states, masks = states.to(device=x.device, dtype=self.dtype), masks.to(x.device)
        step = self.max_rows or x.shape[0]
        chunks = []
        for first in range(0, x.shape[0], step):
            rows = slice(first, min(first + step, x.shape[0]))
            timestep = torch.as_tensor(t, device=x.device).reshape(-1).expand(rows.stop - rows.start)
            out = self.transformer(x[rows], encoder_hidden_states=states[rows], encoder_attention_mask=masks[rows],
                                   timestep=timestep, added_cond_kwargs={"resolution": None, "aspect_ratio": None},
                                   return_dict=False)[0]
            chunks.append(out if self.channels is None else out[:, : self.channels])
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks)
