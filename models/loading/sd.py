"""Loading models from a hub id or a local folder, safetensors only, cached per process."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from models.cache import cached
from models.runtime import Runtime, pick_runtime

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5Tokenizer


@dataclass
class SDComponents:
    """The parts of a Stable-Diffusion-1.x-style model; ``vae=None`` means pixel space."""

    unet: UNet2DConditionModel
    text_encoder: CLIPTextModel | T5EncoderModel | None
    tokenizer: CLIPTokenizer | T5Tokenizer | None
    scheduler_config: dict
    vae: AutoencoderKL | None = None
    source: str = ""
    extras: dict = field(default_factory=dict)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1) if self.vae is not None else 1

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype


class ModelUnavailable(ValueError):
    """A role's model cannot be loaded; the message says what to do about it."""


def unavailable(role: str, source: str, error: Exception) -> ModelUnavailable:
    return ModelUnavailable(
        f"The '{role}' model could not be loaded from {source!r} ({type(error).__name__}: {str(error)[:200]}). "
        f"Point the profile at a local copy: add  {role} = \"/path/to/folder\"  to your profile TOML "
        f"(python app.py --profile my.toml), or run with network access so it can be downloaded."
    )


def require_source(profile, role: str) -> str:
    """The role's source in ``profile``, or a ``ModelUnavailable`` saying how to add it."""
    source = profile.source(role)
    if source is None:
        where = f" ({profile.path})" if getattr(profile, "path", None) else ""
        raise ModelUnavailable(
            f"The profile '{profile.name}'{where} names no '{role}' model, so this tab is off. Add a line "
            f" {role} = \"hub-id-or-/path/to/folder\"  to the profile TOML and restart the app."
        )
    return source


def load_role_sd(profile, runtime: Runtime | None = None, role: str = "sd"):
    """Lazily load (once per process) the profile's SD-style model for ``role``."""
    return load_sd(require_source(profile, role), runtime, role=role, revision=revision_of(profile, role))


def local_unet_config(source: str) -> tuple[dict, int] | None:
    """A local SD folder's UNet config and VAE scale factor (1 without a VAE: pixel space), read from its configs
    without loading weights; None for a hub id or an unreadable folder."""
    import json

    folder = Path(source)
    try:
        unet = json.loads((folder / "unet" / "config.json").read_text())
        factor = 1
        if (folder / "vae" / "config.json").exists():
            vae = json.loads((folder / "vae" / "config.json").read_text())
            factor = 2 ** (len(vae["block_out_channels"]) - 1)
        return unet, factor
    except (OSError, ValueError, KeyError, TypeError):
        return None


def sd_native_size(source: str) -> int | None:
    """A local SD folder's training resolution in pixels, read from its configs (no weights); None if unknown."""
    configs = local_unet_config(source)
    try:
        return int(configs[0]["sample_size"]) * configs[1] if configs else None
    except (KeyError, TypeError, ValueError):
        return None


def load_weights(cls: type, source: str, runtime: Runtime, **kwargs):
    """``cls.from_pretrained(source, **kwargs)`` in the runtime's dtype, the way a GPU Space needs it.

    In float16 the repo's ``fp16`` variant files are asked for first (half the download), and the plain files
    when the repo has none. Safetensors are preferred; a repo with only ``.bin`` weights is accepted, read by
    diffusers' / transformers' own loaders, which call ``torch.load(weights_only=True)``
    (``tests/test_loading.py`` checks every such call). Remote code is never trusted.
    """
    dtype_key = "torch_dtype" if cls.__module__.startswith("diffusers") else "dtype"
    kwargs = {dtype_key: runtime.dtype, **{k: v for k, v in kwargs.items() if v is not None}}
    if runtime.dtype == torch.float16:
        try:
            return cls.from_pretrained(source, variant="fp16", **kwargs)
        except (OSError, ValueError) as e:
            if "fp16" not in str(e) and "variant" not in str(e):
                raise
    return cls.from_pretrained(source, **kwargs)


def load_sd(source: str, runtime: Runtime | None = None, role: str = "sd", revision: str | None = None):
    """A Stable-Diffusion-1.x-style folder or hub id (at ``revision``) as :class:`SDComponents`.

    A folder without ``vae/`` is a pixel-space model (the toy profile's layout).
    """
    runtime = runtime or pick_runtime()

    def build():
        from diffusers import AutoencoderKL, UNet2DConditionModel

        rev = {"revision": revision} if revision else {}
        try:
            unet = load_weights(UNet2DConditionModel, source, runtime, subfolder="unet", **rev)
            encoder_class, tokenizer_class = text_classes(source, revision)
            text_encoder = load_weights(encoder_class, source, runtime, subfolder="text_encoder", **rev)
            tokenizer = tokenizer_class.from_pretrained(source, subfolder="tokenizer", **rev)
            scheduler_config = scheduler_config_of(source, revision)
            vae = None
            if not Path(source).is_dir() or (Path(source) / "vae").is_dir():
                vae = load_weights(AutoencoderKL, source, runtime, subfolder="vae", **rev)
        except Exception as e:  # noqa: BLE001 - every failure becomes the same actionable message
            raise unavailable(role, source, e) from e
        for m in (unet, text_encoder, vae):
            if m is not None:
                m.to(runtime.device).eval().requires_grad_(False)
        return SDComponents(unet, text_encoder, tokenizer, scheduler_config, vae, source=source)

    return cached(("sd", source, revision, runtime), build)


# The text classes an SD-style folder may name; any other name is refused rather than looked up in transformers.
TEXT_CLASSES = frozenset({"CLIPTextModel", "T5EncoderModel", "CLIPTokenizer", "CLIPTokenizerFast", "T5Tokenizer",
                          "T5TokenizerFast"})


def text_classes(source: str, revision: str | None = None) -> tuple[type, type]:
    """The folder's text encoder and tokenizer classes, read from ``model_index.json`` as diffusers reads them: SD's
    CLIP text model and tokenizer, or a T5 encoder (the toy ``sd_t5``, Imagen-style conditioning on per-token T5
    states). A folder without ``model_index.json`` is SD's CLIP pair. Reading the index (rather than asking
    ``AutoTokenizer``) matters offline: the hub's SD repos have no ``tokenizer/config.json`` to probe."""
    import transformers
    from diffusers import DiffusionPipeline

    rev = {"revision": revision} if revision else {}
    index: dict = {}
    if not Path(source).is_dir() or (Path(source) / "model_index.json").is_file():
        index = dict(DiffusionPipeline.load_config(source, **rev))
    names = []
    for part, default in (("text_encoder", "CLIPTextModel"), ("tokenizer", "CLIPTokenizer")):
        name = (index.get(part) or [None, default])[1] or default
        if name not in TEXT_CLASSES:
            raise ValueError(f"{part} class {name!r} in model_index.json is not one this loader knows "
                             f"({', '.join(sorted(TEXT_CLASSES))})")
        names.append(name)
    return getattr(transformers, names[0]), getattr(transformers, names[1])


def scheduler_config_of(source: str, revision: str | None = None) -> dict:
    from diffusers import DDIMScheduler

    rev = {"revision": revision} if revision else {}
    return dict(DDIMScheduler.load_config(source, subfolder="scheduler", **rev))


def revision_of(profile, role: str) -> str | None:
    """The role's pinned hub revision (``{ source = "...", revision = "v2.0" }``); None for folders."""
    revision = profile.options(role).get("revision")
    source = profile.source(role) or ""
    return revision if revision and not Path(source).is_dir() else None


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def weights_on_disk(source: str) -> tuple[int, bool]:
    """(bytes of weight files, whether they are local): a folder's files, or a hub repo's cached snapshot.

    ``(0, False)`` for a hub repo not in the cache yet: its first use downloads it.
    """
    path = Path(source)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.suffix in WEIGHT_SUFFIXES and f.is_file()), True
    if path.is_file():
        return path.stat().st_size, True
    try:
        from huggingface_hub import scan_cache_dir

        for repo in scan_cache_dir().repos:
            if repo.repo_id == source and repo.repo_type == "model":
                return repo.size_on_disk, True
    except Exception:  # noqa: BLE001 - no cache folder yet, or an unreadable one: treat as not cached
        pass
    return 0, False


def describe_load(role: str, source: str | None) -> str:
    """What the progress bar says while a role loads: ``loading sd (3.4 GB)`` or ``downloading and loading …``."""
    if not source:
        return f"{role} (not in this profile)"
    size, local = weights_on_disk(source)
    return f"{role} ({size / 1e9:.2f} GB)" if local else f"{role} (downloading {source} first)"


AUTOGUIDE_ROLE = "autoguide"


def load_autoguide(profile, runtime: Runtime | None = None) -> UNet2DConditionModel:
    """The profile's ``autoguide`` UNet (``<source>/unet``): autoguidance's weaker version of the ``sd`` model.

    It must share the main model's conditioning (same text states, same prediction type); the toy profile ships
    one at half the width and an eighth of the training (``scripts/train/toy_unet.py --autoguide``).
    """
    source = require_source(profile, AUTOGUIDE_ROLE)
    runtime = runtime or pick_runtime()

    def build():
        from diffusers import UNet2DConditionModel

        try:
            unet = load_weights(UNet2DConditionModel, source, runtime, subfolder="unet",
                                revision=revision_of(profile, AUTOGUIDE_ROLE))
        except Exception as e:  # noqa: BLE001 - every failure becomes the same actionable message
            raise unavailable(AUTOGUIDE_ROLE, source, e) from e
        return unet.to(runtime.device).eval().requires_grad_(False)

    return cached((AUTOGUIDE_ROLE, source, runtime), build)


def is_pixel_space(profile, role: str = "sd") -> bool:
    """A local model folder without ``vae/`` samples pixels (the toy models); hub models here are latent."""
    source = profile.source(role)
    return bool(source) and Path(source).is_dir() and not (Path(source) / "vae").is_dir()
