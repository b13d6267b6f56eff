"""Cross-attention maps: where each prompt token is looked at, averaged over heads, layers and steps.

A recording processor wraps each cross-attention layer's own processor: the layer's output is
still computed by the original (so images stay identical), and the softmax over tokens is
computed a second time to be recorded. It is installed only inside :func:`recording`, so normal
generation never pays for it. The model is shared between requests: callers serialise the
requests that record (the app runs its SD endpoints one at a time).

:func:`computing_attention` chooses, for one run, how every attention layer computes: fused
``scaled_dot_product_attention`` (diffusers' ``AttnProcessor2_0``, "sdpa") or the materialised softmax matrix
(``AttnProcessor``). Install it outside :func:`recording` so the recorder wraps the chosen kind.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from guidance.sampler import ModelCall
from models.adapters.denoisers import UNetDenoiser

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel


# How an attention layer computes: "materialised" (AttnProcessor, stores every softmax matrix) or "sdpa"
# (AttnProcessor2_0, fused scaled_dot_product_attention). Same outputs, different memory.
PROCESSORS = ("materialised", "sdpa")


def processor(name: str):
    """A fresh diffusers attention processor of the named kind."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    if name not in PROCESSORS:
        raise ValueError(f"processor must be one of {', '.join(PROCESSORS)}, got {name!r}")
    return AttnProcessor() if name == "materialised" else AttnProcessor2_0()


class AttentionStore:
    """Running sum of cross-attention probabilities resampled to the latent grid ``[B, h, w, tokens]``, per image.

    Only the conditional branch's rows are kept: the unconditional branch's attention says nothing about the prompt.
    Which rows of a UNet call those are is set in :attr:`images` before the call (:class:`RowMarkingDenoiser` does
    it); unset, the last ``batch`` rows are taken, where the sampler stacks the conditional branch when neither PAG
    (whose perturbed rows come after it) nor a row budget (which splits a call) is in play.
    """

    def __init__(self, batch: int, height: int, width: int) -> None:
        self.batch, self.height, self.width = batch, height, width
        self.total: Tensor | None = None
        self.counts = torch.zeros(batch)
        self.images: list[int | None] | None = None  # per row of the current call: its image if conditional

    def record(self, probs: Tensor, heads: int) -> None:
        """``probs``: ``[rows * heads, h_l * w_l, tokens]`` as the attention layer computed it."""
        rows = probs.shape[0] // heads
        pixels, tokens = probs.shape[1], probs.shape[2]
        marked = self.images if self.images is not None else [None] * (rows - self.batch) + list(range(self.batch))
        keep = [row for row, image in enumerate(marked) if image is not None]
        if not keep:
            return
        images = [marked[row] for row in keep]
        p = probs.float().reshape(rows, heads, pixels, tokens)[keep].mean(dim=1)
        # Every UNet level keeps the latent's aspect ratio, so its grid follows from the pixel count.
        h = round(math.sqrt(pixels * self.height / self.width))
        w = pixels // h
        grid = p.reshape(len(keep), h, w, tokens).permute(0, 3, 1, 2)
        if (h, w) != (self.height, self.width):
            grid = F.interpolate(grid, size=(self.height, self.width), mode="bilinear", align_corners=False)
        if self.total is None:
            self.total = torch.zeros(self.batch, self.height, self.width, tokens, device=grid.device)
        self.total[images] += grid.permute(0, 2, 3, 1)
        self.counts[images] += 1

    def maps(self) -> Tensor:
        """Mean attention ``[B, h, w, tokens]``; each pixel's row sums to 1 over the tokens."""
        if self.total is None or not bool((self.counts > 0).all()):
            raise ValueError("no cross-attention was recorded (does this UNet have cross-attention layers?)")
        return self.total / self.counts.to(self.total.device)[:, None, None, None]


class RowMarkingDenoiser(UNetDenoiser):
    """A :class:`~models.adapters.denoisers.UNetDenoiser` that tells ``store`` which rows of each UNet call belong to
    the conditional branch, and to which image, before the call runs."""

    def __init__(self, store: AttentionStore, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.store = store

    def forward_rows(self, x: Tensor, t: Tensor, call: ModelCall, rows: slice) -> Tensor:
        per = self.rows_per_branch(call)
        self.store.images = [row % per if branch == "cond" else None
                             for row, branch in zip(range(rows.start, rows.stop), self.branch_of(call, rows),
                                                    strict=True)]
        try:
            return super().forward_rows(x, t, call, rows)
        finally:
            self.store.images = None


class RecordingProcessor:
    """Delegates to the layer's processor and records the softmax over the context tokens.

    The layer's output is the inner processor's, whatever its kind; the recorded softmax is always computed
    materialised (``get_attention_scores``: a ``[rows × heads, N, tokens]`` matrix per cross-attention layer, freed
    once recorded), because fused attention never forms it.
    """

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


# The processors :func:`computing_attention` swaps: diffusers' two computations of the same attention. Any other
# processor (IP-Adapter's, a custom one) computes something else, so it is refused rather than silently replaced.
SWAPPABLE = ("AttnProcessor", "AttnProcessor2_0")


@contextmanager
def computing_attention(unet: UNet2DConditionModel, kind: str) -> Iterator[int]:
    """Every attention layer of ``unet`` computes with ``kind`` ("sdpa" or "materialised") inside the block; the
    processors it had are restored on exit, also when the block raises. Yields the number of layers set.

    The two kinds give the same output up to float rounding; they differ in memory: "materialised" holds the
    ``heads × N × M`` score and probability matrices of a layer at once, "sdpa" never forms them.
    """
    if kind not in PROCESSORS:
        raise ValueError(f"attention must be one of {', '.join(PROCESSORS)}, got {kind!r}")
    original = dict(unet.attn_processors)
    other = {type(p).__name__ for p in original.values()} - set(SWAPPABLE)
    if other:
        raise ValueError(f"attention = {kind} swaps diffusers' {' and '.join(SWAPPABLE)}; this UNet also has "
                         f"{', '.join(sorted(other))}, which computes something else and is left to its own kind")
    unet.set_attn_processor(processor(kind))
    try:
        yield len(original)
    finally:
        unet.set_attn_processor(original)


def token_positions(tokens: list[str], query: str, offset: int = 1) -> list[int]:
    """Positions in the encoder's sequence of ``query`` among ``tokens`` (the prompt's tokens, which start at
    ``offset``: 1 after CLIP's start token, 0 for T5; ``condition.text.token_offset``).

    A word split into several BPE pieces matches the run of pieces that spells it.
    """
    q = query.strip().lower()
    if not q:
        return []
    low = [t.lower() for t in tokens]
    if q in low:
        return [low.index(q) + offset]
    for start in range(len(low)):
        spelled = ""
        for end in range(start, len(low)):
            spelled += low[end]
            if spelled == q:
                return list(range(start + offset, end + 1 + offset))
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
