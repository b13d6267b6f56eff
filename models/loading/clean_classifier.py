"""A standard ImageNet classifier of clean images (torchvision's ResNet-50) as a guide on the predicted x0.

Used by the classifier-guidance tab's ``compare_clean``: the baseline the noise-aware classifier is compared with.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.loading.download import download_once
from models.runtime import Runtime, pick_runtime

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_clean_guide(classifier: nn.Module, input_size: int = 224) -> Callable[[Tensor], Tensor]:
    """An ImageNet classifier (e.g. ResNet-50) on images in [-1, 1]: resized, ImageNet-normalised."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def guide(x0: Tensor) -> Tensor:
        image = (x0 + 1) / 2
        if image.shape[-1] != input_size:
            image = F.interpolate(image, size=(input_size, input_size), mode="bilinear", align_corners=False)
        return classifier((image - mean.to(image.device)) / std.to(image.device))

    return guide


def resnet50_checkpoint() -> Path:
    """Where torchvision keeps the ImageNet ResNet-50 weights (``TORCH_HOME``/hub/checkpoints)."""
    from torchvision.models import ResNet50_Weights

    url = ResNet50_Weights.IMAGENET1K_V2.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def load_clean_classifier(runtime: Runtime | None = None) -> nn.Module:
    """torchvision's ImageNet ResNet-50 (V2 weights), from its cache or downloaded when online."""
    from torchvision.models import ResNet50_Weights, resnet50

    runtime = runtime or pick_runtime()
    path = download_once(ResNet50_Weights.IMAGENET1K_V2.url, resnet50_checkpoint(),
                         "compare_clean's ResNet-50 weights (torchvision)", "TORCH_HOME/hub/checkpoints")
    net = resnet50()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.to(runtime.device).eval().requires_grad_(False)
