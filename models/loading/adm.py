"""The ``adm_diffusion`` / ``adm_classifier`` roles: which ADM checkpoint fills each model choice.

A role's value in the profile is a source string or an inline table::

    adm_diffusion = { source = "https://.../64x64_diffusion.pt", preset = "64x64_diffusion", "256x256-uncond" = {
    source = "/models/256x256_diffusion_uncond.pt", preset = "256x256_diffusion_uncond" } }

(TOML wants an inline table on one line; it is wrapped here only for reading.)
Top-level keys apply to every model choice; a sub-table named after a choice overrides them for
that choice. ``flags`` (a table of the official flag names) is merged over the ``preset``'s flags.
A source is a local ``.pt``/``.safetensors`` path, a URL (downloaded once into the cache folder) or a
hub file ``org/repo/path/file.pt`` (``hf_hub_download``). A role missing from the profile uses the
official release for the choice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.adapters.adm_sampling import ADMSampling, adm_sampling_setup
from models.architectures.adm import create_classifier, create_model, load_adm_state_dict, to_runtime
from models.cache import cached
from models.loading.download import download_once
from models.loading.sd import ModelUnavailable
from models.profiles import Profile
from models.runtime import Runtime, pick_runtime

RELEASE = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021"
ROLES = ("adm_diffusion", "adm_classifier")

# Flag values of the released checkpoints (golden/adm/manifests.json; the README's sampling commands).
PRESETS: dict[str, dict[str, Any]] = {
    "64x64_diffusion": dict(
        image_size=64, num_channels=192, num_res_blocks=3, num_heads=4, num_heads_upsample=-1, num_head_channels=64,
        attention_resolutions="32,16,8", channel_mult="", dropout=0.1, class_cond=True, use_checkpoint=False,
        use_scale_shift_norm=True, resblock_updown=True, use_fp16=True, use_new_attention_order=True,
        learn_sigma=True, diffusion_steps=1000, noise_schedule="cosine",
    ),
    "64x64_classifier": dict(
        image_size=64, classifier_use_fp16=False, classifier_width=128, classifier_depth=4,
        classifier_attention_resolutions="32,16,8", classifier_use_scale_shift_norm=True,
        classifier_resblock_updown=True, classifier_pool="attention",
    ),
    "256x256_diffusion_uncond": dict(
        image_size=256, num_channels=256, num_res_blocks=2, num_heads=4, num_heads_upsample=-1, num_head_channels=64,
        attention_resolutions="32,16,8", channel_mult="", dropout=0.0, class_cond=False, use_checkpoint=False,
        use_scale_shift_norm=True, resblock_updown=True, use_fp16=True, use_new_attention_order=False,
        learn_sigma=True, diffusion_steps=1000, noise_schedule="linear",
    ),
    "256x256_classifier": dict(
        image_size=256, classifier_use_fp16=False, classifier_width=128, classifier_depth=2,
        classifier_attention_resolutions="32,16,8", classifier_use_scale_shift_norm=True,
        classifier_resblock_updown=True, classifier_pool="attention",
    ),
}


@dataclass(frozen=True)
class ModelChoice:
    """A built-in ``model`` choice: the release files and presets behind it, and its default scale."""

    diffusion: str
    classifier: str
    default_scale: float
    description: str


CHOICES: dict[str, ModelChoice] = {
    "64x64": ModelChoice("64x64_diffusion", "64x64_classifier", 1.0,
                         "class-conditional 64×64 ADM + 64×64 noise-aware classifier (fast)"),
    "256x256-uncond": ModelChoice("256x256_diffusion_uncond", "256x256_classifier", 10.0,
                                  "unconditional 256×256 ADM + 256×256 classifier (the paper's guidance setting)"),
}


@dataclass(frozen=True)
class ADMSpec:
    """Where one role's checkpoint comes from and the flags it is built with."""

    role: str
    source: str
    flags: dict[str, Any] = field(hash=False)

    @property
    def file_name(self) -> str:
        return self.source.rstrip("/").rsplit("/", 1)[-1]


@dataclass
class ADMPair:
    """A loaded diffusion model and classifier, with the flags that describe them."""

    diffusion: nn.Module
    classifier: nn.Module
    diffusion_flags: dict[str, Any]
    classifier_flags: dict[str, Any]
    sources: dict[str, str]

    @property
    def image_size(self) -> int:
        return int(self.diffusion_flags["image_size"])

    @property
    def class_cond(self) -> bool:
        return bool(self.diffusion_flags.get("class_cond", False))

    @property
    def noise_schedule(self) -> str:
        return str(self.diffusion_flags.get("noise_schedule", "linear"))

    @property
    def diffusion_steps(self) -> int:
        return int(self.diffusion_flags.get("diffusion_steps", 1000))

    @property
    def diffusion_module(self) -> nn.Module:
        return self.diffusion

    # What pipelines/classifier_guidance.py asks of any guided model pair.
    clean_guide = None  # compare_clean falls back to the ImageNet ResNet-50 on x̂0
    clean_label = "ResNet-50"

    @property
    def class_names(self) -> tuple[str, ...]:
        from condition.labels import imagenet_classes

        return imagenet_classes()

    @property
    def diffusion_source(self) -> str:
        return self.sources["adm_diffusion"]

    @property
    def classifier_source(self) -> str:
        return self.sources["adm_classifier"]

    def describe(self) -> dict[str, Any]:
        return dict(image_size=self.image_size, class_cond=self.class_cond, noise_schedule=self.noise_schedule,
                    sources=dict(self.sources))  # fmt: skip

    def sampling_setup(self, y: torch.Tensor, scale: float, respacing: str, use_ddim: bool) -> ADMSampling:
        """The official sampling setup; a class-conditional model is also conditioned on ``y``."""
        return adm_sampling_setup(
            self.diffusion, self.classifier, y=y if self.class_cond else None, classifier_y=y,
            classifier_scale=scale, noise_schedule=self.noise_schedule, diffusion_steps=self.diffusion_steps,
            timestep_respacing=respacing, use_ddim=use_ddim,
        )


def cache_dir() -> Path:
    """Where downloaded release files live: ``CONDLAB_ADM_CACHE`` or ``~/.cache/condlab/adm``."""
    env = os.environ.get("CONDLAB_ADM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "condlab" / "adm"


def role_spec(profile: Profile | None, role: str, choice: str) -> ADMSpec:
    """The source and flags of ``role`` for model ``choice`` (profile entry, else the release)."""
    if role not in ROLES:
        raise ValueError(f"unknown ADM role {role!r}; expected one of {ROLES}")
    if choice not in CHOICES:
        raise ValueError(f"model must be one of {', '.join(CHOICES)}; got {str(choice)[:80]!r}")
    builtin = getattr(CHOICES[choice], role.removeprefix("adm_"))
    entry: dict[str, Any] = {"source": f"{RELEASE}/{builtin}.pt", "preset": builtin}
    base = None
    if profile is not None and profile.has(role):
        options = profile.options(role)
        per_choice = options.pop(choice, None)
        for other in CHOICES:
            options.pop(other, None)
        entry = {"source": profile.source(role), **options}
        if isinstance(per_choice, dict):
            entry.update(per_choice)
        base = profile.path.parent if profile.path else None
    preset = entry.get("preset")
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"{role}: unknown preset {preset!r}; known presets: {', '.join(PRESETS)}")
    extra = entry.get("flags") or {}
    if not isinstance(extra, dict):
        raise ValueError(f"{role}: 'flags' must be a table of flag = value")
    flags = {**PRESETS.get(preset, {}), **extra}
    if "image_size" not in flags:
        raise ValueError(f"{role}: give a preset ({', '.join(PRESETS)}) or flags including image_size")
    return ADMSpec(role, _resolve_source(str(entry["source"]), base), flags)


def _resolve_source(source: str, base: Path | None) -> str:
    if source.startswith(("http://", "https://")) or Path(source).is_absolute() or base is None:
        return source
    candidate = (base / source).resolve()
    return str(candidate) if source.startswith(".") or candidate.exists() else source


def _is_hub_file(source: str) -> bool:
    parts = source.split("/")
    return not Path(source).exists() and not source.startswith((".", "/")) and len(parts) >= 3


def checkpoint_path(spec: ADMSpec) -> Path:
    """A local file for ``spec.source``, downloading (once, into :func:`cache_dir`) when needed and allowed."""
    source = spec.source
    if source.startswith(("http://", "https://")):
        advice = (f", or point the profile at a local copy: {spec.role} = {{ source = \"/path/to/{spec.file_name}\" "
                  "}")
        return download_once(source, cache_dir() / spec.file_name, f"The '{spec.role}' checkpoint",
                             "CONDLAB_ADM_CACHE (default ~/.cache/condlab/adm)", advice)
    if _is_hub_file(source):
        repo_id, filename = "/".join(source.split("/")[:2]), "/".join(source.split("/")[2:])
        try:
            from huggingface_hub import hf_hub_download

            return Path(hf_hub_download(repo_id, filename))
        except Exception as e:  # noqa: BLE001 - offline, missing repo or file: one actionable message
            raise ModelUnavailable(
                f"The '{spec.role}' checkpoint {filename} could not be fetched from the hub repo {repo_id} "
                f"({type(e).__name__}). Run once with network access to cache it, or point the profile at a "
                f"local copy: {spec.role} = {{ source = \"/path/to/{Path(filename).name}\" }}."
            ) from e
    path = Path(source)
    if not path.is_file():
        raise ModelUnavailable(
            f"The '{spec.role}' checkpoint {source!r} does not exist; fix the path in the profile."
        )
    return path


def build_adm(spec: ADMSpec, runtime: Runtime | None = None) -> nn.Module:
    """Build from the flags on the meta device, load the checkpoint strictly, move to the runtime."""
    runtime = runtime or pick_runtime()
    create = create_model if spec.role == "adm_diffusion" else create_classifier
    path = checkpoint_path(spec)
    with torch.device("meta"):
        net = create(**spec.flags)
    try:
        load_adm_state_dict(net, path)
    except ValueError as e:
        raise ModelUnavailable(f"The '{spec.role}' checkpoint does not match its flags: {e}") from None
    net.requires_grad_(False)
    fp16 = runtime.dtype == torch.float16 and bool(spec.flags.get("use_fp16", spec.flags.get("classifier_use_fp16")))
    return to_runtime(net, runtime.device, torch.float16 if fp16 else torch.float32)


def load_adm_pair(profile: Profile | None, choice: str, runtime: Runtime | None = None) -> ADMPair:
    """Both models of a ``model`` choice, cached per process (per source, flags and runtime)."""
    runtime = runtime or pick_runtime()
    specs = {role: role_spec(profile, role, choice) for role in ROLES}
    nets = {}
    for role, spec in specs.items():
        key = ("adm", role, spec.source, repr(sorted(spec.flags.items())), runtime)
        nets[role] = cached(key, lambda spec=spec: build_adm(spec, runtime))
    return ADMPair(
        nets["adm_diffusion"], nets["adm_classifier"], specs["adm_diffusion"].flags, specs["adm_classifier"].flags,
        {role: spec.source for role, spec in specs.items()},
    )
