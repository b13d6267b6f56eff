"""The toy profile's (colour, shape) classifiers: ADM encoder classifiers in a folder.

A folder holds ``model.safetensors``, ``flags.json`` (the official ``create_classifier`` flags plus
``num_classes``) and ``classes.json`` (the class names, in label order). The noise-aware one was
trained on x_t at every t of the 1000-step linear schedule; the clean one on clean images only
(t = 0). Both take ``(x in [-1, 1], t)`` like the ImageNet classifiers, so one code path guides with
either.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from models.architectures.adm import create_classifier, load_adm_state_dict, to_runtime
from models.cache import cached
from models.loading.sd import ModelUnavailable
from models.runtime import Runtime, pick_runtime

FILES = ("model.safetensors", "flags.json", "classes.json")


@dataclass(frozen=True)
class LabelledClassifier:
    net: nn.Module
    class_names: tuple[str, ...]
    source: str

    @property
    def image_size(self) -> int:
        return int(self.net.image_size)


def load_labelled_classifier(source: str | None, role: str, runtime: Runtime | None = None) -> LabelledClassifier:
    """Build from ``flags.json`` on the meta device, load ``model.safetensors`` strictly; cached per process."""
    runtime = runtime or pick_runtime()
    if not source:
        raise ModelUnavailable(f"This profile has no '{role}' role (a folder with {', '.join(FILES)}).")
    folder = Path(source)
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        raise ModelUnavailable(f"The '{role}' folder {source} lacks {', '.join(missing)}.")

    def build() -> LabelledClassifier:
        flags = json.loads((folder / "flags.json").read_text())
        names = tuple(str(n) for n in json.loads((folder / "classes.json").read_text()))
        if int(flags.get("num_classes", 1000)) != len(names):
            raise ModelUnavailable(f"'{role}': flags.json says {flags.get('num_classes')} classes, "
                                   f"classes.json names {len(names)}")  # fmt: skip
        with torch.device("meta"):
            net = create_classifier(**flags)
        try:
            load_adm_state_dict(net, folder / "model.safetensors")
        except ValueError as e:
            raise ModelUnavailable(f"The '{role}' weights do not match flags.json: {e}") from None
        net = to_runtime(net.requires_grad_(False), runtime.device, torch.float32)
        return LabelledClassifier(net, names, str(folder))

    return cached(("labelled_classifier", role, str(folder.resolve()), runtime), build)


def class_names_in(source: str | None) -> tuple[str, ...]:
    """The class names a classifier folder declares (``classes.json``), read without loading weights."""
    try:
        return tuple(str(n) for n in json.loads((Path(str(source)) / "classes.json").read_text()))
    except (OSError, ValueError, TypeError) as e:
        raise ModelUnavailable(f"cannot read the class names in {source}/classes.json ({type(e).__name__})") from None

