"""The annotators that turn a photo into a depth or pose map (controlnet_aux's MiDaS and OpenPose), loaded from
the profile's ``annotators`` role and run on the runtime's device.

The role is a hub id (``lllyasviel/Annotators``) or a local folder holding the same file names. Missing
files are reported by name before anything is loaded, because controlnet_aux would otherwise try to
download them (MiDaS even from a second URL).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from condition.images import sanitize_image
from models.cache import cached
from models.runtime import Runtime, pick_runtime

MIDAS_FILES = ("dpt_hybrid-midas-501f0c75.pt",)
OPENPOSE_FILES = ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth")
MIN_RESOLUTION, MAX_RESOLUTION = 64, 2048  # controlnet_aux works in multiples of 64
NO_PERSON = "No person was found in the image: the pose map is empty, so the pose ControlNet has nothing to follow."


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


def load_midas(source: str | None, runtime: Runtime | None = None):
    """controlnet_aux's ``MidasDetector`` (DPT-Hybrid) on the runtime's device, cached per source and device."""
    _require(source, MIDAS_FILES, "Depth preprocessing (MiDaS)")
    device = (runtime or pick_runtime()).device

    def build():
        from controlnet_aux import MidasDetector

        return MidasDetector.from_pretrained(source).to(device)

    return cached(("annotator", "midas", source, str(device)), build)


def load_openpose(source: str | None, runtime: Runtime | None = None):
    """controlnet_aux's ``OpenposeDetector`` (body, hand and face networks) on the runtime's device, cached."""
    _require(source, OPENPOSE_FILES, "Pose preprocessing (OpenPose)")
    device = (runtime or pick_runtime()).device

    def build():
        from controlnet_aux import OpenposeDetector

        return OpenposeDetector.from_pretrained(source).to(device)

    return cached(("annotator", "openpose", source, str(device)), build)


def _resolution(resolution: int) -> int:
    if not isinstance(resolution, int) or not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise ValueError(f"preprocess_resolution must be a whole number between {MIN_RESOLUTION} and "
                         f"{MAX_RESOLUTION}, got {resolution!r}")
    return resolution


def depth_map(image: Image.Image, annotators: str | None, resolution: int = 512,
              runtime: Runtime | None = None) -> Image.Image:
    """MiDaS relative depth (near = bright) as an RGB map of about ``resolution`` pixels on the short side."""
    detector = load_midas(annotators, runtime)
    res = _resolution(resolution)
    return detector(sanitize_image(image), detect_resolution=res, image_resolution=res, output_type="pil")


def pose_map(
    image: Image.Image, annotators: str | None, resolution: int = 512, hands: bool = False, face: bool = False,
    runtime: Runtime | None = None,
) -> tuple[Image.Image, int]:
    """OpenPose skeletons on black and the number of people found (0: the map is empty, see ``NO_PERSON``).

    Mirrors ``OpenposeDetector.__call__`` step by step so the people count comes from the same detection.
    """
    from controlnet_aux.open_pose import draw_poses
    from controlnet_aux.util import HWC3, resize_image

    detector = load_openpose(annotators, runtime)
    res = _resolution(resolution)
    arr = resize_image(HWC3(np.asarray(sanitize_image(image))), res)
    h, w = arr.shape[:2]
    poses = detector.detect_poses(arr, hands, face)
    canvas = HWC3(draw_poses(poses, h, w, draw_body=True, draw_hand=hands, draw_face=face))
    return Image.fromarray(canvas), len(poses)
