"""Loading PixArt-Σ from two repos, the layout diffusers' PixArt-Σ docs use: the transformer from a checkpoint repo
(``PixArt-alpha/PixArt-Sigma-XL-2-512-MS``, subfolder ``transformer``) and the T5 encoder, its tokenizer, the SDXL
VAE and the scheduler config from ``PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers``.

The transformer is a DiT (Peebles & Xie 2023) with cross-attention to T5 states in every block and "AdaLN-single"
(PixArt-α, Chen et al. 2023): one MLP maps the timestep embedding to the scale/shift/gate parameters once, and each
block adds its own learned table to them, instead of DiT's per-block AdaLN-zero MLPs (which held ~27 % of DiT's
parameters). It predicts ε and, like DiT, a per-channel variance interpolation (8 output channels for 4 latent
ones: ``learned_sigma``).

Weights are read as safetensors only and remote code is never trusted. Neither repo ships fp16 variant files, so
the float32 files are read and cast while loading: the transformer and VAE to the runtime's dtype, the T5 encoder to
float16 on CUDA (transformers keeps its feed-forward output layers ``wo`` in float32 there, as T5 overflows in
float16 otherwise) and float32 on the CPU. The tokenizer ships as ``spiece.model`` only, which transformers can read
only with the ``sentencepiece`` and ``protobuf`` packages installed.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from models.cache import cached
from models.loading.sd import ModelUnavailable, scheduler_config_of
from models.runtime import Runtime, pick_runtime

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, PixArtTransformer2DModel
    from transformers import T5EncoderModel

ROLE = "pixart"
TOKENIZER_PACKAGES = ("sentencepiece", "google.protobuf")  # what reading a bare spiece.model takes


@dataclass
class PixArtComponents:
    """A PixArt-Σ transformer with the T5 encoder, tokenizer, VAE and scheduler numbers it was trained with."""

    transformer: PixArtTransformer2DModel
    text_encoder: T5EncoderModel
    tokenizer: object  # transformers' T5Tokenizer
    vae: AutoencoderKL
    scheduler_config: dict
    source: str  # "<transformer source> + <base source>", for metadata

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    @property
    def latent_channels(self) -> int:
        return int(self.transformer.config.in_channels)

    @property
    def learned_sigma(self) -> bool:
        """The transformer predicts ε and a variance per channel (out = 2 × in), as PixArt-Σ's checkpoints do."""
        return int(self.transformer.config.out_channels) == 2 * self.latent_channels

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell along a side: 8 for the SDXL VAE (three downsamplings)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def patch_size(self) -> int:
        return int(self.transformer.config.patch_size)

    @property
    def image_size(self) -> int:
        """The native resolution: the transformer's ``sample_size`` latent cells × the VAE factor (512 for 512-MS)."""
        return int(self.transformer.config.sample_size) * self.vae_scale_factor


def pixart_unavailable(source: str, part: str, error: Exception) -> ModelUnavailable:
    """The one message for every loading failure: which repo and part failed, and how to supply it."""
    hint = ""
    if part == "tokenizer" and missing_tokenizer_packages():
        hint = (f" The T5 tokenizer ships as spiece.model only; reading it needs the "
                f"{' and '.join(p.split('.')[-1] for p in missing_tokenizer_packages())} package(s): "
                "pip install sentencepiece protobuf.")
    return ModelUnavailable(
        f"The '{ROLE}' model could not be loaded: {part} from {source!r} ({type(error).__name__}: "
        f"{str(error)[:200]}).{hint} Point the profile at local copies of both repos (the transformer repo and the "
        f"T5/VAE base repo, in diffusers' layout), or run with network access so they can be downloaded."
    )


def missing_tokenizer_packages() -> list[str]:
    """Of the packages a bare ``spiece.model`` needs, those not installed."""
    missing = []
    for name in TOKENIZER_PACKAGES:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # the parent package (google) is absent
            found = False
        if not found:
            missing.append(name)
    return missing


def text_encoder_dtype(runtime: Runtime) -> torch.dtype:
    """Half precision on CUDA (the 4.8 B-parameter encoder is 19 GB in float32), float32 on the CPU, where float16
    matmuls are slow or missing."""
    return torch.float16 if runtime.device.type == "cuda" else torch.float32


def load_pixart(
    transformer_source: str,
    base_source: str,
    runtime: Runtime | None = None,
    transformer_revision: str | None = None,
    base_revision: str | None = None,
) -> PixArtComponents:
    """Lazily load (once per process) PixArt-Σ: ``transformer_source``'s ``transformer/`` and ``base_source``'s
    ``text_encoder/``, ``tokenizer/``, ``vae/`` and ``scheduler/``, each a hub id (at its revision) or a folder."""
    runtime = runtime or pick_runtime()
    for name, value in (("transformer_source", transformer_source), ("base_source", base_source)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} must be a hub id or a folder, got {value!r}")

    def build() -> PixArtComponents:
        from diffusers import AutoencoderKL, PixArtTransformer2DModel
        from transformers import T5EncoderModel, T5Tokenizer

        def rev(source: str, revision: str | None) -> dict:
            # A folder is read as it is; a hub id at its pinned revision.
            return {"revision": revision} if revision and not Path(source).is_dir() else {}

        steps = (
            ("transformer", transformer_source, lambda: PixArtTransformer2DModel.from_pretrained(
                transformer_source, subfolder="transformer", torch_dtype=runtime.dtype, use_safetensors=True,
                **rev(transformer_source, transformer_revision))),
            ("text_encoder", base_source, lambda: T5EncoderModel.from_pretrained(
                base_source, subfolder="text_encoder", dtype=text_encoder_dtype(runtime), use_safetensors=True,
                **rev(base_source, base_revision))),
            ("tokenizer", base_source, lambda: T5Tokenizer.from_pretrained(
                base_source, subfolder="tokenizer", **rev(base_source, base_revision))),
            ("vae", base_source, lambda: AutoencoderKL.from_pretrained(
                base_source, subfolder="vae", torch_dtype=runtime.dtype, use_safetensors=True,
                **rev(base_source, base_revision))),
            ("scheduler", base_source, lambda: scheduler_config_of(base_source, **rev(base_source, base_revision))),
        )
        parts = {}
        for part, source, load in steps:
            try:
                parts[part] = load()
            except Exception as e:  # noqa: BLE001 - every failure becomes the same actionable message
                raise pixart_unavailable(source, part, e) from e
        for part in ("transformer", "text_encoder", "vae"):
            parts[part].to(runtime.device).eval().requires_grad_(False)
        return PixArtComponents(parts["transformer"], parts["text_encoder"], parts["tokenizer"], parts["vae"],
                                dict(parts["scheduler"]), f"{transformer_source} + {base_source}")

    return cached((ROLE, transformer_source, transformer_revision, base_source, base_revision, runtime), build)
