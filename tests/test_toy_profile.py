"""The shipped toy profile: every model loads through the app's own loaders and does its job briefly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from live_app import live_app
from PIL import Image

from condition.control import canny_map
from condition.shapes_world import COLOUR_NAMES, SHAPE_NAMES, make_batch, to_tensor_range
from guidance.rules import GuidanceRule
from models.controlnet_loading import controlnet_for
from models.image_loading import load_image_variations
from models.loading import load_role_sd
from models.profiles import ROOT, load_profile, toy_available
from models.runtime import pick_runtime
from models.toy_judge import load_judge
from pipelines.controlnet import ControlSpec, controlnet_to_image
from pipelines.image_conditioning import variations
from pipelines.text_to_image import text_to_image

TOY = ROOT / "assets" / "toy"
CPU32 = pick_runtime("cpu", "float32")


def test_toy_is_shipped_and_every_role_exists():
    assert toy_available()
    profile = load_profile("toy")
    for role in profile.roles:
        assert Path(profile.source(role)).is_dir(), role


def test_sizes_and_formats():
    files = [p for p in TOY.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")]
    assert sum(p.stat().st_size for p in files) < 40e6
    assert all(p.stat().st_size < 8e6 for p in files)
    assert not (TOY / "sd" / "vae").exists()  # pixel space


def test_text_to_image_through_the_profile_loader():
    sd = load_role_sd(load_profile("toy"), CPU32)
    out = text_to_image(sd, "a red circle", rule=GuidanceRule("perp-cfg", 4.0), steps=3, num_images=2, seed=0)
    assert out.images.shape == (2, 3, 32, 32) and torch.isfinite(out.images).all()


def test_image_variations_through_the_profile_loader():
    vsd = load_image_variations(load_profile("toy"), CPU32)
    image = Image.fromarray(make_batch(1, seed=3, p_two=0).images[0])
    out = variations(vsd, image, rule=GuidanceRule("cfg", 3.0), steps=3, seed=0, num_images=1)
    assert out.images.shape == (1, 3, 32, 32)


def test_controlnet_through_the_profile_loader():
    profile = load_profile("toy")
    sd, controlnet = load_role_sd(profile, CPU32), controlnet_for(profile, "canny", CPU32)
    edges = canny_map(Image.fromarray(make_batch(1, seed=4, p_two=0).images[0]), 100, 200)
    out = controlnet_to_image(sd, [ControlSpec(controlnet, edges, 1.0, 0.0, 1.0)], "a red cross",
                              rule=GuidanceRule("cfg", 4.0), steps=3, seed=0)
    assert out.images.shape == (1, 3, 32, 32) and out.active == [[True]] * 3


def test_judge_reads_the_world():
    # The evaluation judge (never used for guidance) must itself be right, or its verdicts mean nothing.
    judge = load_judge(TOY / "judge")
    batch = make_batch(240, seed=777, p_two=0)
    colour, shape = judge.predict(torch.from_numpy(to_tensor_range(batch.images)))
    truth = [(COLOUR_NAMES.index(s.shapes[0].colour), SHAPE_NAMES.index(s.shapes[0].shape)) for s in batch.scenes]
    assert np.mean([(c, s) == t for c, s, t in zip(colour, shape, truth, strict=True)]) > 0.95


@pytest.fixture(scope="module")
def toy_client():
    with live_app("toy") as client:
        yield client


def test_toy_app_text_to_image_controlnet_and_variations(toy_client):
    images, *_ = toy_client.predict(prompt="a blue square", steps=25, api_name="/text_to_image")
    assert Image.open(images[0]["image"]).size == (32, 32)
    _, images, *_ = toy_client.predict(steps=25, api_name="/controlnet")  # the shipped photo, canny-preprocessed
    assert Image.open(images[0]["image"]).size == (32, 32)
    images, scores, *_ = toy_client.predict(api_name="/image_conditioning")
    assert Image.open(images[0]["image"]).size == (32, 32)
    # The tiny CLIP's read-out: one cosine per output image, against the input image.
    assert len(scores["output_vs_input_image"]) == 1 and -1 <= scores["output_vs_input_image"][0] <= 1
