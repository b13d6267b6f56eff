"""Text conditioning: prompts to per-token text-encoder states (CLIP as Stable Diffusion uses it, or T5)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class EncodedPrompt:
    states: Tensor  # [B, tokens, width], the cross-attention context
    truncated: list[str]  # per prompt: the words dropped beyond the encoder's length ("" if none)
    token_ids: Tensor  # [B, tokens]


def encode_prompts(tokenizer, text_encoder, prompts: list[str], device: torch.device | None = None) -> EncodedPrompt:
    """CLIP last hidden states of ``prompts`` padded to the tokenizer's max length.

    The empty prompt is allowed: its states are the unconditional context SD was trained
    with. Prompts longer than the encoder's window are truncated and the dropped text is
    reported, so the UI can say so.
    """
    device = device or text_encoder.device
    max_length = tokenizer.model_max_length
    inputs = tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    full = tokenizer(prompts, padding="longest", return_tensors="pt").input_ids
    truncated = [""] * len(prompts)
    if full.shape[-1] > inputs.input_ids.shape[-1]:
        for i, ids in enumerate(full):
            kept = inputs.input_ids[i]
            if not torch.equal(ids[: kept.shape[-1]], kept):
                truncated[i] = tokenizer.decode(ids[max_length - 1 : -1], skip_special_tokens=True).strip()
    mask = None
    # T5 masks its padding inside the encoder (PixArt, SD3 and Imagen encode so); SD's CLIP never does.
    if getattr(text_encoder.config, "use_attention_mask", False) or text_encoder.config.model_type == "t5":
        mask = inputs.attention_mask.to(device)
    states = text_encoder(inputs.input_ids.to(device), attention_mask=mask)[0]
    return EncodedPrompt(states.to(dtype=text_encoder.dtype, device=device), truncated, inputs.input_ids)


def prompt_tokens(tokenizer, prompt: str) -> list[str]:
    """The prompt's tokens as the text encoder sees them (without start/end/padding)."""
    ids = tokenizer(prompt, truncation=True, max_length=tokenizer.model_max_length).input_ids
    special = set(tokenizer.all_special_ids)
    # CLIP's BPE marks a word's end with </w>, T5's SentencePiece its start with ▁: either way, the word itself
    return [tokenizer.convert_ids_to_tokens(i).replace("</w>", "").lstrip("▁") for i in ids if i not in special]


def token_offset(tokenizer) -> int:
    """Where the prompt's first token sits in the encoder's sequence: 1 after CLIP's start token, 0 for T5 (which
    has none)."""
    ids = tokenizer("a").input_ids
    special = set(tokenizer.all_special_ids)
    return next(i for i, token in enumerate(ids) if token not in special)
