"""Perturbed-attention guidance's perturbation: chosen self-attention layers output each token's own value.

Ahn et al. 2024 ("Self-Rectifying Diffusion Sampling with Perturbed-Attention Guidance") evaluate the model a
third time with the self-attention map replaced by the identity, and guide away from that prediction. Here the
replacement is a processor wrapped around each chosen layer's own, acting only on the rows marked perturbed, so
the other branches of the same batched call run exactly as before (diffusers' ``PAGCFGIdentitySelfAttnProcessor``
does the same on the last third of a CFG batch).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import Attention


def identity_attention(attn: Attention, hidden_states: Tensor, temb: Tensor | None = None) -> Tensor:
    """The attention block with its attention map replaced by the identity: out = W_o · W_v · h (norms as usual)."""
    residual = hidden_states
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    four_d = hidden_states.ndim == 4
    if four_d:
        batch, channels, height, width = hidden_states.shape
        hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    hidden_states = attn.to_out[1](attn.to_out[0](attn.to_v(hidden_states)))
    if four_d:
        hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channels, height, width)
    if attn.residual_connection:
        hidden_states = hidden_states + residual
    return hidden_states / attn.rescale_output_factor


class PerturbedSelfAttention:
    """Wraps a layer's processor: rows where ``rows`` is True take :func:`identity_attention`, the others the
    original processor. ``rows`` is set by the denoiser before each model call (None: no row is perturbed)."""

    def __init__(self, original):
        self.original = original
        self.rows: Tensor | None = None

    def __call__(self, attn: Attention, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, temb: Tensor | None = None, **kwargs) -> Tensor:
        rows = self.rows
        if rows is None or not bool(rows.any()):
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        out = torch.empty_like(hidden_states)
        keep = ~rows
        if bool(keep.any()):
            out[keep] = self.original(attn, hidden_states[keep], encoder_hidden_states, attention_mask, temb, **kwargs)
        out[rows] = identity_attention(attn, hidden_states[rows], temb)
        return out


def self_attention_layers(unet: UNet2DConditionModel, layers: str) -> list[str]:
    """Names of the self-attention modules ``layers`` selects ("mid", "up", "down" or a comma list), as diffusers'
    ``pag_applied_layers`` match them; ``ValueError`` when one selects nothing."""
    from diffusers.models.attention_processor import Attention

    found: list[str] = []
    for layer_id in (part.strip() for part in layers.split(",")):
        names = [name for name, module in unet.named_modules()
                 if isinstance(module, Attention) and not module.is_cross_attention and re.search(layer_id, name)]
        if not names:
            raise ValueError(f"pag_layers {layer_id!r} matches no self-attention layer of this UNet")
        found += [n for n in names if n not in found]
    return found


@contextmanager
def perturbed_attention(unet: UNet2DConditionModel, layers: str) -> Iterator[list[PerturbedSelfAttention]]:
    """Within the block the chosen layers can perturb marked rows; their processors are restored afterwards."""
    modules = dict(unet.named_modules())
    wrapped = []
    try:
        for name in self_attention_layers(unet, layers):
            module = modules[name]
            wrapper = PerturbedSelfAttention(module.processor)
            module.processor = wrapper
            wrapped.append((module, wrapper))
        yield [w for _, w in wrapped]
    finally:
        for module, wrapper in wrapped:
            module.processor = wrapper.original


@contextmanager
def perturbed_rows(unet: UNet2DConditionModel, options: Mapping[str, Any] | None, rows: list[bool],
                   device: torch.device) -> Iterator[None]:
    """For one model call: the self-attention layers PAG's options name (``pag_layers``) perturbed on the rows
    marked True, every processor restored afterwards. Nothing is installed when no row is perturbed."""
    if not any(rows):
        yield
        return
    if options is None:
        raise ValueError("a perturbed branch needs PAG's options (which self-attention layers to perturb)")
    with perturbed_attention(unet, options["pag_layers"]) as layers:
        marked = torch.tensor(rows, device=device)
        for layer in layers:
            layer.rows = marked
        yield
