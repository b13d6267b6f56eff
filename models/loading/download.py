"""Fetching a release file once (ADM checkpoints, torchvision's ResNet-50), and knowing when not to try."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from models.loading.sd import ModelUnavailable


def offline() -> bool:
    """``HF_HUB_OFFLINE`` (as huggingface_hub reads it) or ``CONDLAB_OFFLINE``: no download is attempted."""
    hub = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return hub or bool(os.environ.get("CONDLAB_OFFLINE"))


def download_once(url: str, target: Path, what: str, folder: str, advice: str = "") -> Path:
    """``target`` if present, else ``url`` downloaded to it; offline or failing, ``ModelUnavailable`` saying to put
    the file in ``folder`` (named by its setting, e.g. "TORCH_HOME/hub/checkpoints": the server's own paths stay in
    the server) + ``advice``."""
    if target.is_file():
        return target
    if offline():
        raise ModelUnavailable(f"{what} ({target.name}) is not available offline. Download {url} into {folder}"
                               f"{advice}.")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(target), progress=False)
    except Exception as e:  # noqa: BLE001 - any network failure gets the same advice
        raise ModelUnavailable(f"Could not download {what} from {url} ({type(e).__name__}: {str(e)[:160]}). Put "
                               f"{target.name} into {folder}{advice}.") from e
    return target
