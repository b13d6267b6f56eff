"""Tiny random components in the real diffusers / transformers classes.

Used by tests and benchmarks to prove our code paths against diffusers' own pipelines
without downloading anything: the folders they write load through the same loaders
that hub ids go through.
"""

from __future__ import annotations

import json
import shutil
import string
from pathlib import Path

import torch


def write_clip_tokenizer(folder: Path, words: list[str] | None = None, max_length: int = 77) -> Path:
    """A CLIPTokenizer vocabulary written locally: letters, a few whole words, no downloads."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokens = ["!", '"', "#"] + list(string.ascii_lowercase) + [c + "</w>" for c in string.ascii_lowercase]
    merges: list[str] = []
    for word in words or ["red", "blue", "green", "circle", "square", "cat", "dog", "a", "photo", "of"]:
        # Build each word by successive merges so the BPE reproduces it as one token.
        piece = word[0]
        for i, ch in enumerate(word[1:], start=1):
            right = ch + ("</w>" if i == len(word) - 1 else "")
            merges.append(f"{piece} {right}")
            piece = piece + right
            if piece not in tokens:
                tokens.append(piece)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length)
    tok.save_pretrained(folder)
    return folder


def tiny_unet(cross_attention_dim: int = 32, in_channels: int = 4, sample_size: int = 16, **overrides):
    from diffusers import UNet2DConditionModel

    config = dict(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=in_channels,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    config.update(overrides)
    return UNet2DConditionModel(**config)


def tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(16, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
    )


def tiny_clip_text(hidden_size: int = 32, vocab_size: int = 1000, projection_dim: int = 32):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        hidden_size=hidden_size, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
        vocab_size=vocab_size, max_position_embeddings=77, projection_dim=projection_dim,
        bos_token_id=0, eos_token_id=2, pad_token_id=1,
    )
    return CLIPTextModel(config)


def build_tiny_sd(folder: Path, seed: int = 0, prediction_type: str = "epsilon") -> Path:
    """Write a tiny Stable-Diffusion-1.x-style folder (UNet, VAE, CLIP text, tokenizer, DDIM).

    ``prediction_type="v_prediction"`` makes it SD-2-style (the same weights, read as predicting v).
    """
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    folder = Path(folder)
    torch.manual_seed(seed)
    unet = tiny_unet()
    vae = tiny_vae()
    text_encoder = tiny_clip_text()
    tokenizer_dir = write_clip_tokenizer(folder / "_tok")
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type,
    )
    pipe = StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    shutil.rmtree(tokenizer_dir)
    return folder
