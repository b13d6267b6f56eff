"""Text conditioning of a rectified-flow MM-DiT as Stable Diffusion 3 builds it (Esser et al. 2024, "Scaling
Rectified Flow Transformers for High-Resolution Image Synthesis", §5.2 and diffusers' ``StableDiffusion3Pipeline``).

SD3 conditions on two things:

* **per-token states** for the joint attention with the image tokens: each CLIP tower's penultimate hidden state
  (CLIP-L, then CLIP-G, concatenated on the feature axis), zero-padded to T5's width, followed on the sequence axis by
  T5-XXL's last hidden states (T5 runs *without* an attention mask, its padding tokens included):
  ``tokens = [pad(cat(h_L[-2], h_G[-2]), d_T5) ; h_T5]``, shape ``[B, 77 + 256, 4096]`` for SD3.5;
* a **pooled vector** for AdaLN with the timestep: ``pooled = cat(p_L, p_G)``, the towers' projected end-of-text
  embeddings (``CLIPTextModelWithProjection.text_embeds``), ``[B, 2048]``.

A tower may be missing: without CLIP-G (the toy model) only CLIP-L's states and pooled vector are used; without T5
the pipeline substitutes zeros of T5's shape (``max_sequence_length × joint_attention_dim``), and so does this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer, PreTrainedTokenizerBase, T5EncoderModel

T5_MAX_SEQUENCE_LENGTH = 256  # SD3's default ``max_sequence_length``: the model card warns of artefacts beyond it


@dataclass
class FlowPrompt:
    """Encoded prompts, one row per prompt."""

    tokens: Tensor  # [B, clip tokens + T5 tokens, joint width]: the joint-attention context
    pooled: Tensor  # [B, pooled width]: what AdaLN reads with the timestep
    truncated: list[str]  # per prompt: the text no encoder read ("" if none)
    dropped: dict[str, list[str]] = field(default_factory=dict)  # per encoder ("clip", "t5"): the text it cut off


def dropped_text(tokenizer: PreTrainedTokenizerBase, prompt: str, max_length: int) -> str:
    """What ``tokenizer`` with ``truncation=True, max_length`` cuts off ``prompt`` ("" if nothing).

    CLIP keeps ⟨bos⟩ + (max_length − 2) words + ⟨eos⟩ and T5 keeps (max_length − 1) pieces + ⟨/s⟩: in both the dropped
    ids are ``ids[max_length − 1 : −1]`` of the untruncated sequence (its last id is the end token).
    """
    ids = tokenizer(prompt, verbose=False).input_ids  # untruncated on purpose: no "longer than" warning
    if len(ids) <= max_length:
        return ""
    return tokenizer.decode(ids[max_length - 1 : -1], skip_special_tokens=True).strip()


def clip_states(tokenizer: CLIPTokenizer, text_encoder: CLIPTextModelWithProjection, prompts: list[str],
                max_length: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(penultimate hidden states ``[B, max_length, width]``, projected pooled embedding ``[B, projection]``) of one
    CLIP tower, as SD3's ``_get_clip_prompt_embeds`` with ``clip_skip=None`` computes them."""
    ids = tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True,
                    return_tensors="pt").input_ids
    out = text_encoder(ids.to(device), output_hidden_states=True)
    return out.hidden_states[-2], out[0]


def t5_states(tokenizer: PreTrainedTokenizerBase, text_encoder: T5EncoderModel, prompts: list[str], max_length: int,
              device: torch.device) -> Tensor:
    """T5's last hidden states ``[B, max_length, d_model]``, padded to ``max_length`` and encoded without an attention
    mask: SD3 was trained on those padding states, so masking them would change the conditioning."""
    ids = tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True, add_special_tokens=True,
                    return_tensors="pt").input_ids
    return text_encoder(ids.to(device))[0]


@torch.no_grad()
def encode_flow_prompts(
    prompts: list[str],
    *,
    tokenizer: CLIPTokenizer,
    text_encoder: CLIPTextModelWithProjection,
    tokenizer_2: CLIPTokenizer | None = None,
    text_encoder_2: CLIPTextModelWithProjection | None = None,
    tokenizer_3: PreTrainedTokenizerBase | None = None,
    text_encoder_3: T5EncoderModel | None = None,
    joint_width: int | None = None,
    max_sequence_length: int = T5_MAX_SEQUENCE_LENGTH,
    device: torch.device | None = None,
) -> FlowPrompt:
    """``prompts`` as SD3's ``encode_prompt`` encodes them (see the module docstring); the empty prompt is SD3's
    unconditional branch.

    CLIP windows are the first tokenizer's ``model_max_length`` for both towers (77 for SD3; the pipeline reads it
    from ``tokenizer`` alone). T5's window is ``max_sequence_length`` capped by ``tokenizer_3.model_max_length``: 256
    for SD3.5 (the pipeline's default), the tokenizer's own 24 for the toy model. ``joint_width`` (the transformer's
    ``joint_attention_dim``) is needed only without T5, for the zeros that stand in for its states. States are cast
    as the pipeline casts them: the CLIP part to CLIP-L's dtype, the T5 part to T5's.
    """
    if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompts must be a non-empty list of strings, got {str(prompts)[:60]!r}")
    if (tokenizer_2 is None) != (text_encoder_2 is None) or (tokenizer_3 is None) != (text_encoder_3 is None):
        raise ValueError("a second or third text encoder needs its tokenizer, and the other way round")
    if max_sequence_length < 1:
        raise ValueError(f"max_sequence_length must be at least 1, got {max_sequence_length!r}")
    device = device or text_encoder.device
    clip_length = tokenizer.model_max_length
    towers = [(tokenizer, text_encoder)] + ([(tokenizer_2, text_encoder_2)] if text_encoder_2 is not None else [])
    encoded = [clip_states(tok, enc, prompts, clip_length, device) for tok, enc in towers]
    clip_tokens = torch.cat([states for states, _ in encoded], dim=-1).to(dtype=text_encoder.dtype, device=device)
    pooled = torch.cat([pool for _, pool in encoded], dim=-1)
    dropped = {"clip": [dropped_text(tokenizer, p, clip_length) for p in prompts]}

    if text_encoder_3 is not None:
        t5_length = min(max_sequence_length, tokenizer_3.model_max_length)
        t5 = t5_states(tokenizer_3, text_encoder_3, prompts, t5_length, device).to(dtype=text_encoder_3.dtype)
        dropped["t5"] = [dropped_text(tokenizer_3, p, t5_length) for p in prompts]
    else:
        if joint_width is None:
            raise ValueError("without a T5 encoder, joint_width (the transformer's joint_attention_dim) is needed")
        t5 = torch.zeros(len(prompts), max_sequence_length, joint_width, device=device, dtype=text_encoder.dtype)
    if clip_tokens.shape[-1] > t5.shape[-1]:
        raise ValueError(f"the CLIP states ({clip_tokens.shape[-1]} wide) do not fit T5's width ({t5.shape[-1]})")
    tokens = torch.cat([F.pad(clip_tokens, (0, t5.shape[-1] - clip_tokens.shape[-1])), t5], dim=-2)
    # The text no encoder read is the shorter of the tails they cut off (both are tails of the same prompt).
    truncated = [min(tails, key=len) for tails in zip(*dropped.values(), strict=True)]
    return FlowPrompt(tokens, pooled, truncated, dropped)
