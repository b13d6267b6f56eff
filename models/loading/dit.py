"""Loading a class-conditional DiT in diffusers' ``DiTPipeline`` layout: ``transformer/``, ``vae/`` (absent for
a pixel-space model such as the toy one), ``scheduler/`` and ``model_index.json`` with ``id2label``.

``facebook/DiT-XL-2-256`` holds its weights as ``.bin`` only (pickled float32); they are read by diffusers' own
loader, which calls ``torch.load(weights_only=True)``. Its class names come from ``id2label`` in the index; a folder
without one still samples, by class id only (the page says so).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from models.cache import cached
from models.loading.sd import load_weights, require_source, revision_of, unavailable
from models.runtime import Runtime, pick_runtime

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, DiTTransformer2DModel

ROLE = "dit"


@dataclass
class DiTComponents:
    """A class-conditional DiT, its VAE (None: pixel space) and scheduler numbers, and its class names."""

    transformer: DiTTransformer2DModel
    vae: AutoencoderKL | None
    scheduler_config: dict
    class_names: tuple[str, ...] | None  # None: the folder has no id2label
    source: str

    @property
    def num_classes(self) -> int:
        return int(self.transformer.config.num_embeds_ada_norm)

    @property
    def null_class(self) -> int:
        """The label the unconditional branch gets: the extra last row of every block's label table (1000 for
        ImageNet, as ``DiTPipeline`` hard-codes)."""
        return self.num_classes

    @property
    def latent_channels(self) -> int:
        return int(self.transformer.config.in_channels)

    @property
    def learned_sigma(self) -> bool:
        """DiT-XL/2 predicts ε and a variance interpolation per channel (out = 2 × in), as ADM does."""
        return int(self.transformer.config.out_channels) == 2 * self.latent_channels

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1) if self.vae is not None else 1

    @property
    def image_size(self) -> int:
        return int(self.transformer.config.sample_size) * self.vae_scale_factor

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    def label(self, class_id: int) -> str:
        return self.class_names[class_id] if self.class_names else f"class {class_id}"


def class_names_from_index(index: dict, num_classes: int | None = None) -> tuple[str, ...] | None:
    """``id2label`` of a ``DiTPipeline`` index as names in id order (the first of comma-separated synonyms, as
    ImageNet's labels list them), or None when the index has none or it does not cover the ids."""
    id2label = index.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        return None
    try:
        by_id = {int(k): str(v) for k, v in id2label.items()}
    except (TypeError, ValueError):
        return None
    count = num_classes if num_classes is not None else len(by_id)
    if sorted(by_id) != list(range(count)):
        return None
    return tuple(by_id[i].split(",")[0].strip() for i in range(count))


def read_model_index(source: str, revision: str | None = None) -> dict:
    """``model_index.json`` of a folder or a hub repo (from the cache, or downloaded: a 36 kB file)."""
    folder = Path(source)
    if folder.is_dir():
        path = folder / "model_index.json"
    else:
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(source, "model_index.json", revision=revision))
    return json.loads(path.read_text())


def local_dit_index(source: str | None) -> dict | None:
    """A local DiT folder's model index (no weights); None for a hub id or an unreadable folder."""
    if not source or not Path(source).is_dir():
        return None
    try:
        return json.loads((Path(source) / "model_index.json").read_text())
    except (OSError, ValueError):
        return None


def load_dit(profile, runtime: Runtime | None = None, role: str = ROLE) -> DiTComponents:
    """Lazily load (once per process) the profile's DiT, in the runtime's dtype and on its device."""
    source = require_source(profile, role)
    revision = revision_of(profile, role)
    runtime = runtime or pick_runtime()

    def build() -> DiTComponents:
        from diffusers import AutoencoderKL, DDIMScheduler, DiTTransformer2DModel

        rev = {"revision": revision} if revision else {}
        try:
            index = read_model_index(source, revision)
            transformer = load_weights(DiTTransformer2DModel, source, runtime, subfolder="transformer", **rev)
            vae = None
            if (index.get("vae") or [None])[0] is not None:
                vae = load_weights(AutoencoderKL, source, runtime, subfolder="vae", **rev)
            scheduler_config = dict(DDIMScheduler.load_config(source, subfolder="scheduler", **rev))
        except Exception as e:  # noqa: BLE001 - every failure becomes the same actionable message
            raise unavailable(role, source, e) from e
        for module in (transformer, vae):
            if module is not None:
                module.to(runtime.device).eval().requires_grad_(False)
        names = class_names_from_index(index, int(transformer.config.num_embeds_ada_norm))
        return DiTComponents(transformer, vae, scheduler_config, names, source)

    return cached((role, source, revision, runtime), build)
