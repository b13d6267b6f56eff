"""Control maps that need no weights: Canny edges, via controlnet_aux.

Depth (MiDaS) and pose (OpenPose) maps need networks: ``models/loading/annotators.py`` loads and runs them.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
from PIL import Image

# controlnet_aux rounds its working resolution to a multiple of 64, so smaller images
# are detected at this size and the edges brought back to the input's size.
_MIN_DETECT = 64


def canny_map(image: Image.Image | np.ndarray, low_threshold: int = 100, high_threshold: int = 200) -> Image.Image:
    """Canny edges of ``image`` as a 3-channel RGB image of the same size (edges 255, rest 0)."""
    arr = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.uint8)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    h, w = arr.shape[:2]
    side = max(_MIN_DETECT, int(round(min(h, w) / 64)) * 64)
    edges = _canny_detector()(arr, low_threshold, high_threshold, detect_resolution=side, image_resolution=side,
                      output_type="np")  # fmt: skip
    if edges.shape[:2] != (h, w):
        # Area resampling keeps any edge pixel visible; thresholding makes the map binary again.
        edges = cv2.resize(edges, (w, h), interpolation=cv2.INTER_AREA)
        edges = np.where(edges > 0, 255, 0).astype(np.uint8)
    return Image.fromarray(edges[..., :3] if edges.ndim == 3 else np.stack([edges] * 3, -1))


@functools.cache
def _canny_detector():
    # Imported on first use: controlnet_aux pulls in timm and every annotator, about a second of app start.
    from controlnet_aux import CannyDetector

    return CannyDetector()


def check_thresholds(low: float, high: float) -> tuple[int, int]:
    for name, v in (("low_threshold", low), ("high_threshold", high)):
        if not isinstance(v, int | float) or not np.isfinite(v) or not 0 <= v <= 255:
            raise ValueError(f"{name} must be between 0 and 255, got {v!r}")
    if low > high:
        raise ValueError(f"low_threshold ({low:g}) must not exceed high_threshold ({high:g})")
    return int(low), int(high)
