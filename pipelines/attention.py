"""Cross-attention maps: where each prompt token is looked at, averaged over heads, layers and steps.

A recording processor wraps each cross-attention layer's own processor: the layer's output is
still computed by the original (so images stay identical), and the softmax over tokens is
computed a second time to be recorded. It is installed only inside :func:`recording`, so normal
generation never pays for it. The model is shared between requests: callers serialise the
requests that record (the app runs its SD endpoints one at a time).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor


class AttentionStore:
    """Running sum of cross-attention probabilities resampled to the latent grid ``[B, h, w, tokens]``.

    Only the last ``batch`` rows of each call are kept: the sampler stacks the conditional
    branch last, and the unconditional branch's attention says nothing about the prompt.
    """

    def __init__(self, batch: int, height: int, width: int) -> None:
        self.batch, self.height, self.width = batch, height, width
        self.total: Tensor | None = None
        self.count = 0

    def record(self, probs: Tensor, heads: int) -> None:
        """``probs``: ``[rows * heads, h_l * w_l, tokens]`` as the attention layer computed it."""
        rows = probs.shape[0] // heads
        pixels, tokens = probs.shape[1], probs.shape[2]
        p = probs.float().reshape(rows, heads, pixels, tokens)[-self.batch :].mean(dim=1)
        # Every UNet level keeps the latent's aspect ratio, so its grid follows from the pixel count.
        h = round(math.sqrt(pixels * self.height / self.width))
        w = pixels // h
        grid = p.reshape(self.batch, h, w, tokens).permute(0, 3, 1, 2)
        if (h, w) != (self.height, self.width):
            grid = F.interpolate(grid, size=(self.height, self.width), mode="bilinear", align_corners=False)
        grid = grid.permute(0, 2, 3, 1)
        self.total = grid if self.total is None else self.total + grid
        self.count += 1

    def maps(self) -> Tensor:
        """Mean attention ``[B, h, w, tokens]``; each pixel's row sums to 1 over the tokens."""
        if self.total is None:
            raise ValueError("no cross-attention was recorded (does this UNet have cross-attention layers?)")
        return self.total / self.count


class RecordingProcessor:
    """Delegates to the layer's processor and records the softmax over the context tokens."""

    def __init__(self, inner, store: AttentionStore) -> None:
        self.inner, self.store = inner, store

    def __call__(self, attn, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, *args, **kwargs) -> Tensor:
        out = self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)
        if encoder_hidden_states is not None and hidden_states.ndim == 3:
            context = encoder_hidden_states
            if attn.norm_cross:
                context = attn.norm_encoder_hidden_states(context)
            query = attn.head_to_batch_dim(attn.to_q(hidden_states))
            key = attn.head_to_batch_dim(attn.to_k(context))
            self.store.record(attn.get_attention_scores(query, key, None), attn.heads)
        return out


def cross_attention_layers(unet) -> list[str]:
    """Processor names of the cross-attention layers (``attn2`` in diffusers' transformer blocks)."""
    return [name for name in unet.attn_processors if name.endswith("attn2.processor")]


@contextmanager
def recording(unet, store: AttentionStore) -> Iterator[AttentionStore]:
    """Install recording processors on the cross-attention layers; restore the originals on exit."""
    original = dict(unet.attn_processors)
    wrapped = {name: RecordingProcessor(p, store) if name in cross_attention_layers(unet) else p
               for name, p in original.items()}
    unet.set_attn_processor(wrapped)
    try:
        yield store
    finally:
        unet.set_attn_processor(original)


def token_positions(tokens: list[str], query: str) -> list[int]:
    """Positions (in the encoder's sequence, after the start token) of ``query`` among ``tokens``.

    A word split into several BPE pieces matches the run of pieces that spells it.
    """
    q = query.strip().lower()
    if not q:
        return []
    low = [t.lower() for t in tokens]
    if q in low:
        return [low.index(q) + 1]
    for start in range(len(low)):
        spelled = ""
        for end in range(start, len(low)):
            spelled += low[end]
            if spelled == q:
                return list(range(start + 1, end + 2))
            if not q.startswith(spelled):
                break
    known = ", ".join(dict.fromkeys(tokens)) or "(empty prompt)"
    raise ValueError(f"token {query!r} is not in the prompt; its tokens are: {known}")


def token_map(maps: Tensor, positions: list[int]) -> Tensor:
    """Attention of the chosen token(s), ``[B, h, w]``, as probabilities (summed over a word's pieces)."""
    return maps[..., positions].sum(dim=-1)


def overlay(image: Image.Image, heat: Tensor | np.ndarray, alpha: float = 0.5) -> Image.Image:
    """``heat`` (``[h, w]``) stretched to [0, 1], upsampled to the image and blended as a colour map."""
    from matplotlib import colormaps

    heat = torch.as_tensor(heat, dtype=torch.float32)
    low, high = heat.min(), heat.max()
    heat = (heat - low) / (high - low) if high > low else torch.zeros_like(heat)
    big = F.interpolate(heat[None, None], size=(image.height, image.width), mode="bilinear", align_corners=False)
    colours = colormaps["jet"](big[0, 0].clamp(0, 1).numpy())[..., :3]
    base = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    blended = (1 - alpha) * base + alpha * colours
    return Image.fromarray((blended * 255).round().astype(np.uint8))
