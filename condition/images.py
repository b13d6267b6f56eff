"""Uploads as clean 8-bit RGB images: one sanitiser for every image input of the app (control maps, CLIP inputs).

Grey, palette, 16-bit and alpha images are converted by one rule each; the size is checked from the header
before pixels are decoded, so a decompression bomb is refused without being expanded.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

MIN_SIDE = 8  # below this an image carries too little for an edge detector or for CLIP
DEFAULT_MAX_PIXELS = 4096 * 4096


def _to_8bit(arr: np.ndarray) -> np.ndarray:
    """16-bit / integer / float greys to uint8 by their type's range (floats: assumed in [0, 1] or [0, 255])."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.integer):
        top = 65535 if arr.max(initial=0) > 255 else 255
        return np.clip(arr.astype(np.float64) * (255 / top), 0, 255).round().astype(np.uint8)
    arr = np.nan_to_num(arr.astype(np.float64))
    scale = 255 if arr.max(initial=0) <= 1 else 1
    return np.clip(arr * scale, 0, 255).round().astype(np.uint8)


def sanitize_image(
    image: Image.Image | np.ndarray | str | os.PathLike | bytes | None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = MIN_SIDE,
    name: str = "image",
) -> Image.Image:
    """Any upload as an 8-bit RGB PIL image, or a ``ValueError`` that says what is wrong with it.

    Grey, palette, 16-bit and alpha images are converted (alpha composited on white, as a
    transparent drawing on paper); the size is checked from the header before pixels are decoded,
    so a decompression bomb is refused without being expanded.
    """
    if image is None:
        raise ValueError(f"upload an {name} first")
    if isinstance(image, str | os.PathLike | bytes):
        try:
            src = io.BytesIO(image) if isinstance(image, bytes) else Path(image)
            pil = Image.open(src)
        except (UnidentifiedImageError, OSError, ValueError):
            raise ValueError(f"the {name} could not be read as an image (PNG, JPEG, WebP...)") from None
        _check_size(pil.size, max_pixels, min_side, name)
        try:
            pil.load()
        except (OSError, ValueError, SyntaxError):
            raise ValueError(f"the {name} file is truncated or corrupt") from None
        image = pil
    if isinstance(image, np.ndarray):
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
            raise ValueError(f"the {name} must be HxW, HxWx1, HxWx3 or HxWx4, got shape {image.shape}")
        _check_size((image.shape[1], image.shape[0]), max_pixels, min_side, name)
        arr = _to_8bit(image)
        arr = arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr
        image = Image.fromarray(arr)
    if not isinstance(image, Image.Image):
        raise ValueError(f"the {name} must be an image, got {type(image).__name__}")
    _check_size(image.size, max_pixels, min_side, name)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = Image.fromarray(_to_8bit(np.asarray(image)))
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image.convert("RGBA"))
    return image.convert("RGB")


def _check_size(size: tuple[int, int], max_pixels: int, min_side: int, name: str) -> None:
    w, h = size
    if min(w, h) < min_side:
        raise ValueError(f"the {name} is {w}×{h}: each side must be at least {min_side} pixels")
    if w * h > max_pixels:
        raise ValueError(f"the {name} is {w}×{h} = {w * h:,} pixels; at most {max_pixels:,} are accepted")
