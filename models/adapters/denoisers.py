"""Denoisers: models wrapped for the one sampler loop (see ``guidance.sampler.Denoiser``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from guidance.sampler import ModelCall
from models.adapters.pag import perturbed_rows
from models.runtime import row_budget

if TYPE_CHECKING:
    from diffusers import DiTTransformer2DModel, UNet2DConditionModel


class UNetDenoiser:
    """A ``UNet2DConditionModel`` with a fixed context per branch.

    ``cond`` / ``uncond`` are the cross-attention contexts ``[B, tokens, width]`` (text states, or image
    embeddings as one token). The loop stacks the input per branch; the matching contexts are stacked the same
    way so the branches run in one UNet call. Two branches take the conditional context with another model:
    ``"weak"`` runs :attr:`weak` (autoguidance's weaker model; ``generate`` sets it when a rule asks for it) and
    ``"perturbed"`` runs the UNet with the self-attention layers the call's options name perturbed for its rows
    (PAG, ``models.adapters.pag``), installed for that call only.
    """

    CONTEXT = {"uncond": "uncond", "cond": "cond", "weak": "cond", "perturbed": "cond"}

    def __init__(self, unet: UNet2DConditionModel, cond: Tensor, uncond: Tensor | None = None,
                 cross_attention_kwargs: dict | None = None, max_rows: int | None = None,
                 class_labels: Tensor | None = None):
        self.unet = unet
        self.context = {"cond": cond, "uncond": uncond}
        # Per image, what a UNet with a class embedding reads beside t (a distilled student's guidance scale).
        self.class_labels = class_labels
        self.cross_attention_kwargs = cross_attention_kwargs
        # At most this many rows per UNet call (memory): rows are independent, so chunks give the same result.
        self.max_rows = max_rows if max_rows is not None else row_budget()
        self.weak: UNet2DConditionModel | None = None

    def contexts(self, call: ModelCall) -> Tensor:
        parts = [self.context[self.CONTEXT[b]] for b in call.branches]
        if any(p is None for p in parts):
            raise ValueError("this guidance rule needs an unconditional context")
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def __call__(self, x: Tensor, t: Tensor, call: ModelCall) -> Tensor:
        """Every branch's rows, in chunks of at most ``max_rows``; a chunk never mixes the weak model's rows with
        the main model's."""
        per = x.shape[0] // len(call.branches)
        step = self.max_rows or x.shape[0]
        chunks = []
        for first, last in _segments(call.branches, per):
            for i in range(first, last, step):
                rows = slice(i, min(i + step, last))
                chunks.append(self.forward_rows(x[rows], t, call, rows))
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks)

    def branch_of(self, call: ModelCall, rows: slice) -> list[str]:
        per = self.rows_per_branch(call)
        return [call.branches[r // per] for r in range(rows.start, rows.stop)]

    def rows_per_branch(self, call: ModelCall) -> int:
        return self.context["cond"].shape[0]

    def model_for(self, call: ModelCall, rows: slice) -> UNet2DConditionModel:
        """The model for these rows: the weak one for autoguidance's rows, else the UNet."""
        if self.branch_of(call, rows)[0] == "weak":
            if self.weak is None:
                raise ValueError("autoguidance needs a weaker model: the profile's autoguide role")
            return self.weak
        return self.unet

    def forward_rows(self, x: Tensor, t: Tensor, call: ModelCall, rows: slice) -> Tensor:
        """The model on the branch-stacked rows ``rows`` (``x`` holds just those rows): the weak model's rows with
        text alone, the others through :meth:`model_call`, PAG's rows with their layers perturbed."""
        unet = self.model_for(call, rows)
        perturbed = [b == "perturbed" for b in self.branch_of(call, rows)]
        with perturbed_rows(unet, call.options.get("perturbed"), perturbed, self.context["cond"].device):
            if unet is not self.unet:
                return self.text_call(unet, x, t, call, rows)
            return self.model_call(x, t, call, rows)

    def model_call(self, x: Tensor, t: Tensor, call: ModelCall, rows: slice) -> Tensor:
        """The main UNet on these rows; subclasses add their conditioning (IP-Adapter images, ControlNet residuals)."""
        return self.text_call(self.unet, x, t, call, rows)

    def text_call(self, unet: UNet2DConditionModel, x: Tensor, t: Tensor, call: ModelCall, rows: slice) -> Tensor:
        labels = None
        if self.class_labels is not None and unet is self.unet:
            labels = torch.cat([self.class_labels] * len(call.branches))[rows]
        return unet(x, t, encoder_hidden_states=self.contexts(call)[rows], class_labels=labels,
                    cross_attention_kwargs=self.cross_attention_kwargs, return_dict=False)[0]


def _segments(branches: tuple[str, ...], per: int) -> list[tuple[int, int]]:
    """Row ranges of consecutive branches that share a model (the weak model's rows apart from the rest)."""
    segments: list[tuple[int, int]] = []
    for i, branch in enumerate(branches):
        start, weak = i * per, branch == "weak"
        if segments and (branches[i - 1] == "weak") == weak:
            segments[-1] = (segments[-1][0], start + per)
        else:
            segments.append((start, start + per))
    return segments


class DiTDenoiser:
    """A class-conditional ``DiTTransformer2DModel``: the conditional rows get ``class_ids``, the unconditional rows
    the null class (the last row of every block's label table), in one call as ``DiTPipeline`` batches them.

    ``channels`` keeps the first output channels only (None: all): a learned-variance DiT predicts 2 × in
    channels, and a scheduler without a learned variance takes ε alone, as ``DiTPipeline`` splits it.
    """

    def __init__(self, transformer: DiTTransformer2DModel, class_ids: Tensor, null_class: int,
                 channels: int | None = None, max_rows: int | None = None):
        self.transformer = transformer
        self.labels = {"cond": class_ids.long(), "uncond": torch.full_like(class_ids.long(), null_class)}
        self.channels = channels
        self.max_rows = max_rows if max_rows is not None else row_budget()

    def __call__(self, x: Tensor, t: Tensor, call: ModelCall) -> Tensor:
        missing = [b for b in call.branches if b not in self.labels]
        if missing:
            raise ValueError(f"a class-conditional DiT has no {missing[0]!r} branch (autoguidance and PAG need a "
                             "second model or attention perturbation this tab does not offer)")
        labels = torch.cat([self.labels[b] for b in call.branches]).to(x.device)
        step = self.max_rows or x.shape[0]
        chunks = []
        for i in range(0, x.shape[0], step):
            rows = slice(i, min(i + step, x.shape[0]))
            timestep = torch.as_tensor(t, device=x.device).reshape(-1).expand(rows.stop - rows.start)
            out = self.transformer(x[rows], timestep=timestep, class_labels=labels[rows], return_dict=False)[0]
            chunks.append(out if self.channels is None else out[:, : self.channels])
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks)
