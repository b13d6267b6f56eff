"""Depth (MiDaS) and pose (OpenPose) preprocessing, loaded through our loaders from folders of random networks.

The fixtures save controlnet-aux's own model classes, with seeded random weights, under the real file names
and in the official formats, so ``load_midas`` / ``load_openpose`` run controlnet-aux's real loading code:

* ``dpt_hybrid-midas-501f0c75.pt``: the ``DPTDepthModel`` (DPT-Hybrid) state dict, read by ``BaseModel.load``;
* ``body_pose_model.pth``, ``hand_pose_model.pth``: state-dict keys without their first dotted component
  (``conv1_1.weight`` for ``model0.conv1_1.weight``), which ``open_pose.util.transfer`` puts back;
* ``facenet.pth``: the plain ``FaceNet`` state dict.

To stay small and fast the networks are only built on the meta device (for the keys and shapes), and every
tensor is a float16 window into one seeded random pool per init scale: ``torch.save`` writes each pool once,
so the MiDaS file is about 33 MB instead of 246 MB, and ``load_state_dict`` copies the values into the fp32
parameters. Whether such weights find people is luck, not a property: these seeded ones find 19 in the photo.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from condition.images import sanitize_image
from models.loading.annotators import (
    MIDAS_FILES,
    NO_PERSON,
    OPENPOSE_FILES,
    depth_map,
    load_midas,
    load_openpose,
    missing_annotator_files,
    pose_map,
)
from models.profiles import load_profile
from testing.tiny import build_tiny_controlnet, write_random_midas, write_random_openpose

PHOTO = Path(__file__).resolve().parents[1] / "assets" / "photos" / "astronaut.png"
RES = 256  # the 128×128 photo is detected (and mapped) at 256×256


def _forget(kind: str, source: str) -> None:
    """Drop a detector from the process-wide model cache (hundreds of MB for MiDaS) once the module is done."""
    from models.cache import evict

    for device in ("cpu", "cuda"):
        evict(("annotator", kind, source, device))


@pytest.fixture(scope="module")
def midas_folder(tmp_path_factory):
    source = str(write_random_midas(tmp_path_factory.mktemp("annotators") / "midas", seed=0))
    yield source
    _forget("midas", source)


@pytest.fixture(scope="module")
def pose_folder(tmp_path_factory):
    source = str(write_random_openpose(tmp_path_factory.mktemp("annotators") / "openpose", seed=3))
    yield source
    _forget("openpose", source)


@pytest.fixture(scope="module")
def blank_pose_folder(tmp_path_factory):
    """All-zero OpenPose weights: flat heat maps, so no peak passes the threshold and nobody is found."""
    source = str(write_random_openpose(tmp_path_factory.mktemp("annotators") / "blank_openpose", zero=True))
    yield source
    _forget("openpose", source)


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.open(PHOTO)


# --- depth ------------------------------------------------------------------------------------------------------


def test_depth_map_loads_the_folder_and_equals_controlnet_aux(midas_folder, photo):
    from controlnet_aux import MidasDetector

    out = depth_map(photo, midas_folder, RES)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (RES, RES)
    # Our loader read the file (not some default init) and caches the detector per source.
    detector = load_midas(midas_folder)
    assert detector is load_midas(midas_folder)
    saved = torch.load(Path(midas_folder) / MIDAS_FILES[0], weights_only=True)
    params = dict(detector.model.model.named_parameters())
    for key in ("pretrained.model.pos_embed", "scratch.output_conv.4.weight"):
        assert torch.equal(params[key], saved[key].float()), key

    reference = MidasDetector.from_pretrained(midas_folder)(
        sanitize_image(photo), detect_resolution=RES, image_resolution=RES, output_type="pil"
    )
    assert np.array_equal(np.asarray(out), np.asarray(reference))

    arr = np.asarray(out)
    assert (arr == arr[..., :1]).all(), "a depth map is grey"
    assert arr.min() == 0 and arr.max() == 255, "controlnet-aux normalises depth to the full range"
    assert len(np.unique(arr)) > 50 and arr.std() > 10, "random weights still give a structured map"


# --- pose -------------------------------------------------------------------------------------------------------


def test_pose_map_with_random_weights_equals_openpose_detector(pose_folder, photo, monkeypatch):
    out, people = pose_map(photo, pose_folder, RES)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (RES, RES)
    assert isinstance(people, int) and people >= 0

    detector = load_openpose(pose_folder)
    assert detector is load_openpose(pose_folder)
    saved = torch.load(Path(pose_folder) / OPENPOSE_FILES[0], weights_only=True)
    assert torch.equal(detector.body_estimation.model.model0.conv1_1.weight, saved["conv1_1.weight"].float())

    # __call__ detects at detect_resolution and resizes the canvas to image_resolution's size: the same size
    # here, where cv2.resize only copies, so the two maps are comparable pixel for pixel.
    found = []
    detect = detector.detect_poses
    monkeypatch.setattr(detector, "detect_poses", lambda *a, **kw: found.append(detect(*a, **kw)) or found[-1])
    reference = detector(
        sanitize_image(photo), detect_resolution=RES, image_resolution=RES, include_body=True, include_hand=False,
        include_face=False, output_type="pil",
    )  # fmt: skip
    assert np.array_equal(np.asarray(out), np.asarray(reference))
    assert [people] == [len(poses) for poses in found], "the count is what controlnet-aux's own call detects"
    # Not two black canvases: these seeded random weights "find" people (19 here), so skeletons are drawn.
    print(f"random OpenPose weights found {people} people")
    assert people > 0 and np.asarray(out).any()


def test_no_person_gives_zero_and_a_black_map(blank_pose_folder, photo):
    out, people = pose_map(photo, blank_pose_folder, RES)
    assert people == 0 and out.mode == "RGB" and out.size == (RES, RES)
    assert not np.asarray(out).any()
    reference = load_openpose(blank_pose_folder)(sanitize_image(photo), detect_resolution=RES, image_resolution=RES)
    assert np.array_equal(np.asarray(out), np.asarray(reference))


def test_no_person_through_the_controlnet_endpoint(blank_pose_folder, photo, tiny_sd_folder, tmp_path_factory):
    from tasks.controlnet import CONTROLNET

    root = tmp_path_factory.mktemp("pose_profile")
    pose = build_tiny_controlnet(root / "pose", tiny_sd_folder, seed=3)
    profile = root / "tiny_pose.toml"
    profile.write_text(f'sd = "{tiny_sd_folder}"\ncontrolnet_pose = "{pose}"\nannotators = "{blank_pose_folder}"\n'
                       "[limits]\nmax_pixels = 4096\nmax_steps = 10\nmax_images = 2\n")  # fmt: skip
    result = CONTROLNET(load_profile(profile), image=photo, control="pose", preprocess=True,
                        preprocess_resolution=RES, prompt="an astronaut", steps=2, width=32, height=32, seed=0)
    cmap, gallery, plot, meta, _saturation = result.values(CONTROLNET.spec)
    assert cmap.size == (RES, RES) and not np.asarray(cmap).any()
    assert result.notes == meta["notes"] == [NO_PERSON]  # the UI shows the note as a warning
    assert meta["parameters"]["control"] == "pose" and meta["controlnet_steps_on"] == [2]
    assert len(gallery) == 1 and gallery[0][0].size == (32, 32)
    assert list(plot.columns) == ["step", "value", "series"] and len(plot)


# --- missing files ----------------------------------------------------------------------------------------------


def _named(message: str, files: tuple[str, ...]) -> list[str]:
    return [f for f in files if f in message]


@pytest.mark.parametrize("present", [(), ("body_pose_model.pth",), ("hand_pose_model.pth", "facenet.pth")])
def test_missing_openpose_files_are_named_exactly(tmp_path, present):
    for name in present:
        (tmp_path / name).write_bytes(b"")  # never read: the check comes before any loading
    missing = [f for f in OPENPOSE_FILES if f not in present]
    assert missing_annotator_files(str(tmp_path), OPENPOSE_FILES) == missing
    with pytest.raises(ValueError) as err:
        load_openpose(str(tmp_path))
    message = str(err.value)
    assert _named(message, OPENPOSE_FILES) == missing and f"the folder {tmp_path}" in message
    assert "annotators = " in message and "huggingface.co/lllyasviel/Annotators" in message


def test_missing_midas_file_is_named(tmp_path):
    for name in OPENPOSE_FILES:  # a complete OpenPose folder is not a MiDaS folder
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(ValueError) as err:
        load_midas(str(tmp_path))
    assert _named(str(err.value), MIDAS_FILES + OPENPOSE_FILES) == list(MIDAS_FILES)
    with pytest.raises(ValueError, match="Depth preprocessing"):
        depth_map(Image.open(PHOTO), str(tmp_path), RES)


def test_no_annotators_role_and_uncached_sources(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for load in (load_midas, load_openpose):
        with pytest.raises(ValueError, match="needs the 'annotators' role"):
            load(None)
    with pytest.raises(ValueError) as err:
        load_openpose("nobody/no-such-annotators")
    assert "hub repository 'nobody/no-such-annotators' (not in the offline cache)" in str(err.value)
    # A relative path that does not exist is a folder, not a hub id (it used to be reported as a hub repository).
    with pytest.raises(ValueError) as err:
        load_midas("./no-such-folder")
    assert "the folder ./no-such-folder" in str(err.value) and "hub repository" not in str(err.value)


def test_annotators_run_on_the_runtime_s_device(midas_folder, monkeypatch):
    """MiDaS and OpenPose are moved to the runtime's device (they ran on the CPU beside a CUDA UNet before)."""
    import controlnet_aux

    from models.loading.annotators import load_midas as load
    from models.runtime import Runtime

    moved = []

    class Detector:
        @classmethod
        def from_pretrained(cls, source):
            return cls()

        def to(self, device):
            moved.append(str(device))
            return self

    monkeypatch.setattr(controlnet_aux, "MidasDetector", Detector)
    cuda = Runtime(torch.device("cuda"), torch.float16)
    assert isinstance(load(midas_folder, cuda), Detector) and moved == ["cuda"]
    _forget("midas", midas_folder)
