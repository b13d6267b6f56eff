"""Control maps for ControlNet, computed with controlnet_aux's detectors, and upload sanitising.

Canny needs no weights. Depth (MiDaS DPT-Hybrid) and pose (OpenPose) load their networks from
the profile's ``annotators`` role: a hub id (``lllyasviel/Annotators``) or a local folder holding
the same file names. Missing files are reported by name before anything is loaded, because
controlnet_aux would otherwise try to download them (MiDaS even from a second URL).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from models.loading import cached

# controlnet_aux rounds its working resolution to a multiple of 64, so smaller images
# are detected at this size and the edges brought back to the input's size.
_MIN_DETECT = 64

MIN_SIDE = 8
DEFAULT_MAX_PIXELS = 4096 * 4096
MIDAS_FILES = ("dpt_hybrid-midas-501f0c75.pt",)
OPENPOSE_FILES = ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth")
NO_PERSON = "No person was found in the image: the pose map is empty, so the pose ControlNet has nothing to follow."


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


def _canny_detector():
    # Imported on first use: controlnet_aux pulls in timm and every annotator, about a second of app start.
    from controlnet_aux import CannyDetector

    return cached(("canny_detector",), CannyDetector)


def check_thresholds(low: float, high: float) -> tuple[int, int]:
    for name, v in (("low_threshold", low), ("high_threshold", high)):
        if not isinstance(v, int | float) or not np.isfinite(v) or not 0 <= v <= 255:
            raise ValueError(f"{name} must be between 0 and 255, got {v!r}")
    if low > high:
        raise ValueError(f"low_threshold ({low:g}) must not exceed high_threshold ({high:g})")
    return int(low), int(high)


# --- uploads -------------------------------------------------------------------------------------


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


# --- annotator weights ---------------------------------------------------------------------------


def missing_annotator_files(source: str, files: tuple[str, ...]) -> list[str]:
    """Which of ``files`` the ``annotators`` source lacks (a folder, or the hub cache for a hub id)."""
    if Path(source).is_dir():
        return [f for f in files if not (Path(source) / f).is_file()]
    if Path(source).is_absolute() or source.startswith("."):
        return list(files)
    from huggingface_hub import try_to_load_from_cache

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return [f for f in files if not isinstance(try_to_load_from_cache(source, f), str)]
    return []  # online: controlnet_aux downloads them


def _require(source: str | None, files: tuple[str, ...], what: str) -> None:
    if not source:
        raise ValueError(
            f"{what} needs the 'annotators' role in the profile (e.g. annotators = \"lllyasviel/Annotators\")"
        )
    missing = missing_annotator_files(source, files)
    if missing:
        where = (
            f"the folder {source}"
            if Path(source).is_absolute() or source.startswith(".") or Path(source).is_dir()
            else f"the hub repository {source!r} (not in the offline cache)"
        )
        raise ValueError(
            f"{what} needs {', '.join(missing)}, missing from {where}. Download "
            f"{' and '.join(missing)} from https://huggingface.co/lllyasviel/Annotators and put them in one folder, "
            f"then set  annotators = \"/that/folder\"  in your profile TOML."
        )


def load_midas(source: str | None):
    """controlnet_aux's ``MidasDetector`` (DPT-Hybrid), cached per source."""
    _require(source, MIDAS_FILES, "Depth preprocessing (MiDaS)")

    def build():
        from controlnet_aux import MidasDetector

        return MidasDetector.from_pretrained(source)

    return cached(("annotator", "midas", source), build)


def load_openpose(source: str | None):
    """controlnet_aux's ``OpenposeDetector`` (body, hand and face networks), cached per source."""
    _require(source, OPENPOSE_FILES, "Pose preprocessing (OpenPose)")

    def build():
        from controlnet_aux import OpenposeDetector

        return OpenposeDetector.from_pretrained(source)

    return cached(("annotator", "openpose", source), build)


def _resolution(resolution: int) -> int:
    if not isinstance(resolution, int) or not 64 <= resolution <= 2048:
        raise ValueError(f"preprocess_resolution must be a whole number between 64 and 2048, got {resolution!r}")
    return resolution


def depth_map(image: Image.Image, annotators: str | None, resolution: int = 512) -> Image.Image:
    """MiDaS relative depth (near = bright) as an RGB map of about ``resolution`` pixels on the short side."""
    detector = load_midas(annotators)
    res = _resolution(resolution)
    return detector(sanitize_image(image), detect_resolution=res, image_resolution=res, output_type="pil")


def pose_map(
    image: Image.Image, annotators: str | None, resolution: int = 512, hands: bool = False, face: bool = False
) -> tuple[Image.Image, int]:
    """OpenPose skeletons on black and the number of people found (0: the map is empty, see ``NO_PERSON``).

    Mirrors ``OpenposeDetector.__call__`` step by step so the people count comes from the same detection.
    """
    from controlnet_aux.open_pose import draw_poses
    from controlnet_aux.util import HWC3, resize_image

    detector = load_openpose(annotators)
    res = _resolution(resolution)
    arr = resize_image(HWC3(np.asarray(sanitize_image(image))), res)
    h, w = arr.shape[:2]
    poses = detector.detect_poses(arr, hands, face)
    canvas = HWC3(draw_poses(poses, h, w, draw_body=True, draw_hand=hands, draw_face=face))
    return Image.fromarray(canvas), len(poses)
