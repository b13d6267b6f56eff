"""Loading a rectified-flow text-to-image model in Stable Diffusion 3's folder layout (``StableDiffusion3Pipeline``).

The layout (Esser et al. 2024, "Scaling Rectified Flow Transformers"; ``stabilityai/stable-diffusion-3.5-medium``):
``transformer/`` (``SD3Transformer2DModel``, the MM-DiT), ``scheduler/`` (``FlowMatchEulerDiscreteScheduler``),
``text_encoder/`` + ``tokenizer/`` (CLIP-L), ``text_encoder_2/`` + ``tokenizer_2/`` (CLIP-G), ``text_encoder_3/`` +
``tokenizer_3/`` (T5-XXL), ``vae/`` (``AutoencoderKL``, 16 latent channels) and ``model_index.json``. CLIP-G, T5 and
the VAE may be absent (``[null, null]`` in the index, or no folder): the toy model has neither CLIP-G nor a VAE and
samples pixels. Weights are read from safetensors only; in float16 the ``fp16`` variant files come first where the
repo has them (SD3.5's text encoders), else the plain files (its transformer and VAE are stored in half precision).

The hub repo is gated: its files download only with a token of an account that accepted the licence. The token is
the ``token`` argument or the ``HF_TOKEN`` environment variable (a Space secret); without access the load fails with
a :class:`ModelUnavailable` that says so and what to do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from models.cache import cached
from models.loading.sd import ModelUnavailable, load_weights, require_source, revision_of, unavailable
from models.runtime import Runtime, pick_runtime

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer, PreTrainedTokenizerBase, T5EncoderModel

ROLE = "flow"
OPTIONAL_PARTS = ("text_encoder_2", "text_encoder_3", "vae")
TOKENIZER_OF = {"text_encoder_2": "tokenizer_2", "text_encoder_3": "tokenizer_3"}


@dataclass
class FlowComponents:
    """The parts of an SD3-layout model; ``vae=None`` means pixel space, ``text_encoder_2=None`` no CLIP-G tower,
    ``text_encoder_3=None`` no T5 (its states are then zeros, as SD3's pipeline does)."""

    transformer: SD3Transformer2DModel
    scheduler_config: dict
    text_encoder: CLIPTextModelWithProjection
    tokenizer: CLIPTokenizer
    text_encoder_2: CLIPTextModelWithProjection | None = None
    tokenizer_2: CLIPTokenizer | None = None
    text_encoder_3: T5EncoderModel | None = None
    tokenizer_3: PreTrainedTokenizerBase | None = None
    vae: AutoencoderKL | None = None
    source: str = ""

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell along a side: 2^(VAE levels − 1), 8 for SD3; 1 in pixel space."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1) if self.vae is not None else 1

    @property
    def pixel_space(self) -> bool:
        return self.vae is None

    @property
    def latent_channels(self) -> int:
        return int(self.transformer.config.in_channels)

    @property
    def native_size(self) -> int:
        """The training resolution in pixels: the transformer's ``sample_size`` × the VAE's factor (1024 for SD3.5)."""
        return int(self.transformer.config.sample_size) * self.vae_scale_factor

    @property
    def max_size(self) -> int | None:
        """The largest side in pixels the transformer's positional embedding covers (``pos_embed_max_size`` patches;
        6144 for SD3.5, 32 for the toy), None when it sets no limit."""
        patches = self.transformer.config.get("pos_embed_max_size")
        return int(patches) * self.size_multiple if patches else None

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this: one transformer patch of latent cells."""
        return int(self.transformer.config.patch_size) * self.vae_scale_factor


def hub_token(token: str | None = None) -> str | None:
    """The access token for gated repos: the argument, else ``HF_TOKEN`` (a Space secret), else None."""
    return token or os.environ.get("HF_TOKEN") or None


def is_access_error(error: BaseException | None) -> bool:
    """Whether a load failed because the hub refused access (a gated repo, or an unauthorised request).

    diffusers and transformers re-raise the hub's ``GatedRepoError`` as an ``OSError`` whose text may not say so
    (diffusers: "not a valid model identifier"), so the whole chain of causes is searched.
    """
    from huggingface_hub.errors import GatedRepoError

    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        status = getattr(getattr(error, "response", None), "status_code", None)
        text = str(error).lower()
        if isinstance(error, GatedRepoError) or status in (401, 403) or "gated repo" in text:
            return True
        error = error.__cause__ or error.__context__
    return False


def gated(source: str, token_given: bool, error: Exception) -> ModelUnavailable:
    """The plain message for a gated repo, with what to do about it."""
    page = f"https://huggingface.co/{source}"
    if token_given:
        return ModelUnavailable(
            f"The '{ROLE}' model {source!r} is a gated repository on the Hugging Face hub, and the access token "
            f"given (HF_TOKEN) has no access to it. Accept its licence at {page} with the account the token belongs to "
            f"(the token needs read access), then restart the app. ({type(error).__name__})")
    return ModelUnavailable(
        f"The '{ROLE}' model {source!r} is a gated repository on the Hugging Face hub, and no access token was "
        f"given. Accept its licence at {page} (logged in), create a read token at "
        "https://huggingface.co/settings/tokens, and set it as HF_TOKEN (a Space secret, or an environment variable) "
        f"before starting the app. ({type(error).__name__})")


def read_model_index(source: str, hub: dict[str, Any]) -> dict | None:
    """The folder's or repo's ``model_index.json``; None for a local folder without one (its subfolders then say
    which parts it has)."""
    from diffusers import DiffusionPipeline

    if Path(source).is_dir() and not (Path(source) / "model_index.json").is_file():
        return None
    return dict(DiffusionPipeline.load_config(source, **hub))


def has_part(index: dict | None, source: str, name: str) -> bool:
    """Whether the model has the optional part ``name``: its index entry is not ``[null, null]``; without an index,
    its subfolder exists."""
    if index is not None and name in index:
        entry = index[name]
        return isinstance(entry, list | tuple) and bool(entry) and entry[0] is not None
    return (Path(source) / name).is_dir()


def check_fit(parts: FlowComponents) -> None:
    """``ValueError`` when the encoders' widths do not match the transformer's inputs (a mixed-up folder)."""
    config = parts.transformer.config
    towers = [e for e in (parts.text_encoder, parts.text_encoder_2) if e is not None]
    pooled = sum(int(e.config.projection_dim) for e in towers)
    if pooled != int(config.pooled_projection_dim):
        raise ValueError(f"the CLIP towers' pooled width {pooled} is not the transformer's pooled_projection_dim "
                         f"{config.pooled_projection_dim}")
    clip_width = sum(int(e.config.hidden_size) for e in towers)
    if clip_width > int(config.joint_attention_dim):
        raise ValueError(f"the CLIP states ({clip_width} wide) exceed the transformer's joint_attention_dim "
                         f"{config.joint_attention_dim}")
    if parts.text_encoder_3 is not None and int(parts.text_encoder_3.config.d_model) != int(config.joint_attention_dim):
        raise ValueError(f"T5's width {parts.text_encoder_3.config.d_model} is not the transformer's "
                         f"joint_attention_dim {config.joint_attention_dim}")


def load_flow(source: str, runtime: Runtime | None = None, revision: str | None = None,
              token: str | None = None) -> FlowComponents:
    """An SD3-layout folder or hub id (at ``revision``) as :class:`FlowComponents`, loaded once per process.

    ``token`` (default: ``HF_TOKEN``) is sent for gated repos and never cached with the model. Every failure becomes
    a :class:`ModelUnavailable` naming the ``flow`` role: a gated repo without access says so and how to get it.
    """
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"source must be a hub id or a folder, got {source!r}")
    runtime = runtime or pick_runtime()
    token = hub_token(token)

    def build() -> FlowComponents:
        try:
            parts = load_parts(source, runtime, revision, token)
            check_fit(parts)
        except ModelUnavailable:
            raise
        except Exception as e:  # noqa: BLE001 - every failure becomes one actionable message
            if is_access_error(e):
                raise gated(source, token is not None, e) from e
            raise unavailable(ROLE, source, e) from e
        for model in (parts.transformer, parts.text_encoder, parts.text_encoder_2, parts.text_encoder_3, parts.vae):
            if model is not None:
                model.to(runtime.device).eval().requires_grad_(False)
        return parts

    return cached((ROLE, source, revision, runtime), build)


def load_parts(source: str, runtime: Runtime, revision: str | None, token: str | None) -> FlowComponents:
    """Every part the index names, through the project's loader (safetensors only, fp16 variant first in fp16)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

    hub = {k: v for k, v in (("revision", revision), ("token", token)) if v is not None}
    index = read_model_index(source, hub)

    def weights(cls: type, subfolder: str):
        return load_weights(cls, source, runtime, subfolder=subfolder, use_safetensors=True, **hub)

    parts = FlowComponents(
        transformer=weights(SD3Transformer2DModel, "transformer"),
        scheduler_config=dict(FlowMatchEulerDiscreteScheduler.load_config(source, subfolder="scheduler", **hub)),
        text_encoder=weights(CLIPTextModelWithProjection, "text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **hub),
        source=source,
    )
    if has_part(index, source, "text_encoder_2"):
        parts.text_encoder_2 = weights(CLIPTextModelWithProjection, "text_encoder_2")
        parts.tokenizer_2 = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer_2", **hub)
    if has_part(index, source, "text_encoder_3"):
        parts.text_encoder_3 = weights(T5EncoderModel, "text_encoder_3")
        parts.tokenizer_3 = T5TokenizerFast.from_pretrained(source, subfolder="tokenizer_3", **hub)
    if has_part(index, source, "vae"):
        parts.vae = weights(AutoencoderKL, "vae")
    return parts


def load_role_flow(profile, runtime: Runtime | None = None, role: str = ROLE) -> FlowComponents:
    """Lazily load (once per process) the profile's rectified-flow model for ``role``, at its pinned revision."""
    return load_flow(require_source(profile, role), runtime, revision=revision_of(profile, role))
