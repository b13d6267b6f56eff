"""Loading the CLIP-image-conditioned models: image variations, IP-Adapter (on top of ``sd``) and CLIP read-outs.

Roles (profile keys) and their defaults in the full profile::

    image_variations = { source = "lambdalabs/sd-image-variations-diffusers", revision = "v2.0" }
    ip_adapter = { source = "h94/IP-Adapter", subfolder = "models", weight_name = "ip-adapter_sd15.safetensors",
                   image_encoder = "models/image_encoder" }
    clip = "openai/clip-vit-large-patch14"

Weights load as safetensors (IP-Adapter ``.bin`` only through ``torch.load(weights_only=True)``);
remote code is never trusted. Tiny random folders in these layouts come from ``testing/tiny.py``.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from models.cache import cached
from models.loading.sd import (
    SDComponents,
    load_role_sd,
    load_weights,
    require_source,
    revision_of,
    scheduler_config_of,
    unavailable,
)
from models.runtime import Runtime, pick_runtime

VARIATIONS_ROLE = "image_variations"
IP_ADAPTER_ROLE = "ip_adapter"
CLIP_ROLE = "clip"
IP_ADAPTER_DEFAULTS = {"subfolder": "models", "weight_name": "ip-adapter_sd15.safetensors",
                       "image_encoder": "models/image_encoder"}


@dataclass
class ClipReadout:
    """A full CLIP model with its tokenizer and image processor, for measuring outputs."""

    model: object
    tokenizer: object
    processor: object
    source: str = ""


@dataclass
class IPAdapterComponents:
    """The ``sd`` model plus a private UNet copy carrying the adapter (the shared UNet stays untouched)."""

    sd: SDComponents  # the text model
    unet: object  # the adapted copy
    image_encoder: object
    feature_extractor: object
    source: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)  # the adapter scale lives on the shared UNet

    def set_scale(self, scale: float) -> None:
        from diffusers.models.attention_processor import IPAdapterAttnProcessor, IPAdapterAttnProcessor2_0

        for proc in self.unet.attn_processors.values():
            if isinstance(proc, IPAdapterAttnProcessor | IPAdapterAttnProcessor2_0):
                proc.scale = [float(scale)]


def load_image_variations(profile, runtime: Runtime | None = None):
    """The profile's ``image_variations`` model as ``SDComponents`` with ``extras`` image_encoder/feature_extractor."""
    runtime = runtime or pick_runtime()
    source = require_source(profile, VARIATIONS_ROLE)
    return load_variations_source(source, runtime, revision_of(profile, VARIATIONS_ROLE))


def load_variations_source(source: str, runtime: Runtime | None = None, revision: str | None = None):
    runtime = runtime or pick_runtime()

    def build():
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        rev = {"revision": revision} if revision else {}
        try:
            unet = load_weights(UNet2DConditionModel, source, runtime, subfolder="unet", **rev)
            encoder = load_weights(CLIPVisionModelWithProjection, source, runtime, subfolder="image_encoder", **rev)
            processor = CLIPImageProcessor.from_pretrained(source, subfolder="feature_extractor", **rev)
            vae = None
            if not Path(source).is_dir() or (Path(source) / "vae").is_dir():
                vae = load_weights(AutoencoderKL, source, runtime, subfolder="vae", **rev)
            scheduler_config = scheduler_config_of(source, revision)
        except Exception as e:  # noqa: BLE001 - every failure becomes the same actionable message
            raise unavailable(VARIATIONS_ROLE, source, e) from e
        if unet.config.cross_attention_dim != encoder.config.projection_dim:
            raise unavailable(VARIATIONS_ROLE, source, ValueError(
                f"UNet cross_attention_dim {unet.config.cross_attention_dim} != image encoder projection_dim "
                f"{encoder.config.projection_dim}"))
        for m in (unet, encoder, vae):
            if m is not None:
                m.to(runtime.device).eval().requires_grad_(False)
        return SDComponents(unet, None, None, scheduler_config, vae, source=source,
                            extras={"image_encoder": encoder, "feature_extractor": processor})

    return cached((VARIATIONS_ROLE, source, revision, runtime), build)


def load_clip(profile, runtime: Runtime | None = None) -> ClipReadout:
    runtime = runtime or pick_runtime()
    return load_clip_source(require_source(profile, CLIP_ROLE), runtime)


def load_clip_source(source: str, runtime: Runtime | None = None) -> ClipReadout:
    runtime = runtime or pick_runtime()

    def build():
        from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

        try:
            model = load_weights(CLIPModel, source, runtime)
            tokenizer = CLIPTokenizer.from_pretrained(source)
            processor = CLIPImageProcessor.from_pretrained(source)
        except Exception as e:  # noqa: BLE001
            raise unavailable(CLIP_ROLE, source, e) from e
        model.to(runtime.device).eval().requires_grad_(False)
        return ClipReadout(model, tokenizer, processor, source)

    return cached((CLIP_ROLE, source, runtime), build)


def read_ip_adapter_weights(path: Path) -> dict:
    """``{"image_proj": {...}, "ip_adapter": {...}}`` from the released single-file layout."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        flat = load_file(str(path))
        state = {"image_proj": {}, "ip_adapter": {}}
        for key, value in flat.items():
            group, _, rest = key.partition(".")
            if group in state:
                state[group][rest] = value
    elif path.suffix == ".bin":
        state = torch.load(path, map_location="cpu", weights_only=True)
    else:
        raise ValueError(f"IP-Adapter weights must be .safetensors or .bin, got {path.name}")
    if not state.get("image_proj") or not state.get("ip_adapter"):
        raise ValueError(f"{path.name} has no image_proj / ip_adapter weights")
    return state


def _adapter_file(source: str, subfolder: str, weight_name: str) -> Path:
    if Path(source).is_dir():
        path = Path(source) / subfolder / weight_name
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
        return path
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(source, weight_name, subfolder=subfolder or None))


def load_ip_adapter(profile, runtime: Runtime | None = None) -> IPAdapterComponents:
    """The ``sd`` model with the profile's IP-Adapter installed on a private copy of its UNet."""
    runtime = runtime or pick_runtime()
    source = require_source(profile, IP_ADAPTER_ROLE)
    options = {**IP_ADAPTER_DEFAULTS, **profile.options(IP_ADAPTER_ROLE)}
    sd = load_role_sd(profile, runtime, "sd")
    return load_ip_adapter_source(sd, source, runtime, **{k: options[k] for k in IP_ADAPTER_DEFAULTS})


def load_ip_adapter_source(sd, source: str, runtime: Runtime | None = None, *, subfolder: str = "models",
                           weight_name: str = "ip-adapter_sd15.safetensors",
                           image_encoder: str = "models/image_encoder") -> IPAdapterComponents:
    runtime = runtime or pick_runtime()

    def build():
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        try:
            state = read_ip_adapter_weights(_adapter_file(source, subfolder, weight_name))
            encoder = load_weights(CLIPVisionModelWithProjection, source, runtime, subfolder=image_encoder)
            unet = copy.deepcopy(sd.unet)
            # The same installation diffusers' load_ip_adapter performs on a pipeline's UNet.
            unet._load_ip_adapter_weights([state], low_cpu_mem_usage=False)
        except Exception as e:  # noqa: BLE001
            raise unavailable(IP_ADAPTER_ROLE, source, e) from e
        size = encoder.config.image_size
        processor = CLIPImageProcessor(size=size, crop_size=size)
        encoder.to(runtime.device).eval().requires_grad_(False)
        unet.to(runtime.device, runtime.dtype).eval().requires_grad_(False)
        return IPAdapterComponents(sd, unet, encoder, processor, source)

    return cached((IP_ADAPTER_ROLE, source, subfolder, weight_name, image_encoder, sd.source, runtime), build)
