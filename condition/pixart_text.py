"""Text conditioning for PixArt-Σ: prompts to T5 encoder states and the padding mask the transformer attends with.

PixArt-Σ (Chen et al. 2024, "PixArt-Σ: Weak-to-Strong Training of Diffusion Transformer for 4K Text-to-Image
Generation") conditions every block's cross-attention on T5-v1.1-XXL's last hidden states, like PixArt-α
(Chen et al. 2023) but with 300 tokens instead of 120, so long dense captions fit. The tokens are padded to 300 and
the padding is masked twice: inside T5's self-attention, and in the transformer's cross-attention, where
``PixArtTransformer2DModel`` turns the mask into an additive bias, (1 − mask) · (−10000), so padding positions get
(numerically) zero attention weight. The mask therefore travels with the states to the denoiser.

This reproduces ``PixArtSigmaPipeline.encode_prompt`` with ``clean_caption=False``: each prompt is lower-cased and
stripped, tokenized to exactly ``max_sequence_length`` tokens (truncating longer ones, padding shorter ones; T5 adds
``</s>``, no start token), encoded with the attention mask, and cast to the encoder's dtype. The negative prompt
(``""`` by default) goes through the same steps with the same length; its states are CFG's unconditional context.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

MAX_SEQUENCE_LENGTH = 300  # PixArt-Σ's T5 context (PixArt-α used 120)


@dataclass
class T5Prompts:
    """T5 states of a batch of prompts, with what the transformer and the UI need alongside."""

    states: Tensor  # [B, L, width] in the encoder's dtype, L = max_sequence_length
    mask: Tensor  # [B, L] int64: 1 for a token (``</s>`` included), 0 for padding
    truncated: list[str]  # per prompt: the text dropped beyond the window ("" if none)
    token_ids: Tensor  # [B, L]


def preprocess(prompt: str) -> str:
    """The pipeline's caption preprocessing without ``clean_caption`` (which needs bs4 and ftfy): lower case,
    surrounding whitespace removed."""
    return prompt.lower().strip()


def truncated_text(tokenizer, prompt: str, max_length: int) -> str:
    """The words a ``max_length`` window drops from ``prompt`` (already preprocessed), "" if it fits.

    Truncation keeps the first ``max_length − 1`` tokens and ``</s>``, so the dropped ones are
    ``ids[max_length − 1 : −1]`` of the untruncated ids (the last being ``</s>``), as the pipeline's warning says.
    """
    ids = tokenizer(prompt).input_ids
    if len(ids) <= max_length:
        return ""
    return tokenizer.decode(ids[max_length - 1 : -1], skip_special_tokens=True).strip()


@torch.no_grad()
def encode_t5_prompts(
    tokenizer,
    text_encoder,
    prompts: list[str],
    device: torch.device | None = None,
    max_sequence_length: int = MAX_SEQUENCE_LENGTH,
) -> T5Prompts:
    """T5 last hidden states and attention masks of ``prompts``, each padded or truncated to
    ``max_sequence_length`` tokens, as ``PixArtSigmaPipeline.encode_prompt`` computes them.

    The empty prompt is allowed (the default negative prompt: only ``</s>`` is unmasked). Rows are independent
    (T5 masks padding), so prompt and negative prompt can be encoded in one batch.
    """
    if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompts must be a list of strings, got {type(prompts).__name__}")
    if not isinstance(max_sequence_length, int) or isinstance(max_sequence_length, bool) or max_sequence_length < 1:
        raise ValueError(f"max_sequence_length must be a positive whole number, got {max_sequence_length!r}")
    device = device or text_encoder.device
    texts = [preprocess(p) for p in prompts]
    inputs = tokenizer(texts, padding="max_length", max_length=max_sequence_length, truncation=True,
                       add_special_tokens=True, return_tensors="pt")
    mask = inputs.attention_mask.to(device)
    states = text_encoder(inputs.input_ids.to(device), attention_mask=mask)[0]
    truncated = [truncated_text(tokenizer, text, max_sequence_length) for text in texts]
    return T5Prompts(states.to(dtype=text_encoder.dtype, device=device), mask, truncated, inputs.input_ids)
