"""The ControlNet tab over gradio_client against a live app (tiny SD + tiny ControlNets profile)."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from live_app import live_app  # noqa: E402

from reporting.metadata import read_png_metadata  # noqa: E402
from testing.tiny import build_tiny_controlnet  # noqa: E402

pytestmark = pytest.mark.live

PHOTO = Path(__file__).resolve().parents[1] / "assets" / "photos" / "astronaut.png"
SIZE = 32
BASE = dict(control="canny", preprocess=True, low_threshold=100, high_threshold=200, preprocess_resolution=512,
            prompt="a red cat", negative_prompt="", guidance="cfg", scale=6.0, eta=0.0, basis="uncond", rescale=0.0,
            conditioning_scale=1.0, guidance_start=0.0, guidance_end=1.0, steps=3, width=SIZE, height=SIZE, seed=3,
            scheduler="ddim", num_images=1)  # fmt: skip


@pytest.fixture(scope="module")
def setup(tiny_sd_folder, tmp_path_factory):
    root = tmp_path_factory.mktemp("cn_app")
    canny = build_tiny_controlnet(root / "canny", tiny_sd_folder, seed=1)
    depth = build_tiny_controlnet(root / "depth", tiny_sd_folder, seed=2)
    profile = root / "tiny_cn.toml"
    profile.write_text(f'sd = "{tiny_sd_folder}"\ncontrolnet_canny = "{canny}"\ncontrolnet_depth = "{depth}"\n'
                       f'annotators = "{root / "no_annotators"}"\n[limits]\nmax_pixels = 4096\nmax_steps = 10\n'
                       f'max_images = 2\nmax_upload_pixels = 1000000\n')  # fmt: skip
    with live_app(profile) as client:
        yield client, root, canny


def _call(client, image, **kw):
    from gradio_client import handle_file

    return client.predict(handle_file(str(image)), **{**BASE, **kw}, api_name="/controlnet")


def test_canny_with_preprocessing_on_the_shipped_photo(setup):
    client, _, _ = setup
    cmap, gallery, plot, meta, _saturation = _call(client, PHOTO)
    edges = np.asarray(Image.open(cmap))
    assert edges.shape == (128, 128, 3) and set(np.unique(edges)) <= {0, 255} and edges.any()
    assert len(gallery) == 1
    png = Image.open(gallery[0]["image"])
    assert png.size == (SIZE, SIZE)
    assert read_png_metadata(png)["parameters"]["control"] == "canny"
    assert {row[2] for row in plot["data"]} and len(plot["data"]) >= 3  # the browser draws it: data, not a picture
    assert meta["parameters"]["conditioning_scale"] == 1.0 and meta["controlnet_steps_on"] == [3]


def test_map_supplied_matches_diffusers_within_one_level(setup, tiny_sd_folder):
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    client, root, canny = setup
    rng = np.random.default_rng(1)
    edges = np.where(rng.random((SIZE, SIZE)) > 0.8, 255, 0).astype(np.uint8)
    Image.fromarray(np.stack([edges] * 3, -1)).save(root / "map.png")
    _, gallery, _, _, _ = _call(client, root / "map.png", preprocess=False, conditioning_scale=0.8,
                             guidance_start=0.2, guidance_end=0.9, steps=4)  # fmt: skip
    ours = np.asarray(Image.open(gallery[0]["image"]).convert("RGB")).astype(int)
    pipe = StableDiffusionControlNetPipeline.from_pretrained(
        tiny_sd_folder, controlnet=ControlNetModel.from_pretrained(canny), safety_checker=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    ref = pipe("a red cat", image=Image.open(root / "map.png"), guidance_scale=6.0, num_inference_steps=4,
               height=SIZE, width=SIZE, controlnet_conditioning_scale=0.8, control_guidance_start=0.2,
               control_guidance_end=0.9, generator=torch.Generator("cpu").manual_seed(3), output_type="np").images[0]
    ref = (ref * 255).round().astype(int)
    assert np.abs(ours - ref).max() <= 1


def test_multi_controlnet_endpoint(setup):
    from gradio_client import handle_file

    client, root, _ = setup
    maps, gallery, _, meta, _saturation = client.predict(
        image=handle_file(str(PHOTO)), image_b=None, control_a="canny", control_b="depth", preprocess=False,
        prompt="a cat", guidance="cfg", scale=5.0, conditioning_scale_a=1.0, guidance_start_a=0.0,
        guidance_end_a=0.5, conditioning_scale_b=0.7, guidance_start_b=0.5, guidance_end_b=1.0, steps=2, width=SIZE,
        height=SIZE, seed=1, scheduler="ddim", num_images=1, api_name="/controlnet_multi",
    )
    assert len(maps) == 2 and len(gallery) == 1
    assert [meta["parameters"][f"control_{tag}"] for tag in "ab"] == ["canny", "depth"]
    assert meta["controlnet_steps_on"] == [1, 1]  # A on the first half of two steps, B on the second


def test_zero_conv_endpoint(setup):
    client, _, _ = setup
    report, table = client.predict(0, 4, api_name="/zero_conv")
    assert report["bit_identical"] and report["weight_grad_rel_error"] <= 1e-5 and "bit identical" in table
