"""/image_conditioning through a live app subprocess and gradio_client: parity, PNG metadata, CLIP scores, bad input."""


import numpy as np
import pytest
import torch
from diffusers import StableDiffusionImageVariationPipeline
from gradio_client import handle_file
from live_app import live_app
from PIL import Image

from models.loading.image import load_variations_source
from models.loading.sd import load_sd
from models.profiles import load_profile
from models.runtime import pick_runtime
from pipelines.image_conditioning import variation_pixels
from reporting.metadata import read_png_metadata
from tasks.image_conditioning import IMAGE_CONDITIONING
from testing.tiny import build_tiny_image_models, build_tiny_ip_adapter

pytestmark = pytest.mark.live

CPU32 = pick_runtime("cpu", "float32")
BASE = dict(prompt="a red cat", negative_prompt="", image_scale=0.6, mix=0.0, guidance="cfg", scale=3.0, eta=0.0,
            basis="uncond", rescale=0.0, steps=2, width=32, height=32, seed=11, scheduler="ddim", num_images=1)


def _photo(path):
    rng = np.random.default_rng(1)
    array = (rng.random((40, 48, 3)) * 255).astype(np.uint8)
    array[:20, :, 2] = 240
    Image.fromarray(array).save(path)
    return path


@pytest.fixture(scope="module")
def setup(tiny_sd_folder, tmp_path_factory):
    root = tmp_path_factory.mktemp("image_app")
    tiny = build_tiny_image_models(root)
    ipa = build_tiny_ip_adapter(root / "IP-Adapter", load_sd(str(tiny_sd_folder), CPU32).unet)
    profile = root / "tiny.toml"
    profile.write_text(
        f'sd = "{tiny_sd_folder}"\nimage_variations = "{tiny["variations"]}"\nclip = "{tiny["clip"]}"\n'
        f'ip_adapter = {{ source = "{ipa}", subfolder = "models" }}\n'
        "[limits]\nmax_pixels = 4096\nmax_steps = 10\nmax_images = 2\nmax_upload_pixels = 1000000\n"
    )
    photo = _photo(root / "photo.png")
    with live_app(profile) as client:
        yield client, root, tiny, photo


def _call(client, image, **kw):
    return client.predict(image=handle_file(str(image)) if image else None, **{**BASE, **kw},
                          api_name="/image_conditioning")


def test_variations_endpoint_matches_pipeline(setup):
    client, _, tiny, photo = setup
    gallery, scores, _plot, meta, seed, _saturation = _call(client, photo, mode="variations", num_images=2)
    assert seed == 11 and meta["parameters"]["mode"] == "variations"
    vsd = load_variations_source(str(tiny["variations"]), CPU32)
    pipe = StableDiffusionImageVariationPipeline.from_pretrained(tiny["variations"], safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(variation_pixels(vsd, Image.open(photo)), guidance_scale=3.0, num_inference_steps=2, height=32,
                    width=32, num_images_per_prompt=2, generator=torch.Generator("cpu").manual_seed(11)).images
    assert len(gallery) == 2
    for item, ref in zip(gallery, expected, strict=True):
        with Image.open(item["image"]) as img:
            assert img.format == "PNG"
            assert read_png_metadata(img)["parameters"]["mode"] == "variations"
            diff = np.abs(np.asarray(img.convert("RGB"), dtype=np.int16) - np.asarray(ref, dtype=np.int16))
        assert diff.max() <= 1
    assert len(scores["output_vs_input_image"]) == 2 and -1 <= scores["input_vs_prompt"] <= 1
    assert meta["clip"] == scores


def test_ip_adapter_scale_zero_is_the_text_to_image_endpoint(setup):
    client, _, _, photo = setup
    gallery, *_ = _call(client, photo, mode="ip-adapter", image_scale=0.0, scale=7.5, negative_prompt="dog")
    t2i, *_ = client.predict(prompt="a red cat", negative_prompt="dog", guidance="cfg", scale=7.5, eta=0.0,
                             basis="uncond", rescale=0.0, steps=2, width=32, height=32, seed=11, scheduler="ddim",
                             num_images=1, attention_token="", api_name="/text_to_image")
    a, b = (np.asarray(Image.open(g[0]["image"]).convert("RGB")) for g in (gallery, t2i))
    assert np.array_equal(a, b)
    some, scores, *_ = _call(client, photo, mode="ip-adapter", image_scale=0.6, scale=7.5, negative_prompt="dog")
    assert not np.array_equal(np.asarray(Image.open(some[0]["image"]).convert("RGB")), b)
    assert scores["output_vs_prompt"] is not None


def test_cross_modal_endpoint(setup):
    client, _, _, photo = setup
    gallery, scores, _, meta, _, _ = _call(client, photo, mode="cross-modal", mix=0.5, guidance="perp-cfg")
    assert len(gallery) == 1 and meta["rule"]["name"] == "perp-cfg" and scores["output_vs_prompt"] is not None
    text_only, *_ = _call(client, None, mode="cross-modal", mix=1.0)
    assert len(text_only) == 1


def test_missing_roles_are_named(tmp_path):
    profile_path = tmp_path / "bare.toml"
    profile_path.write_text("[limits]\nmax_pixels = 4096\n")
    profile = load_profile(profile_path)
    for mode, role in (("variations", "image_variations"), ("ip-adapter", "ip_adapter")):
        with pytest.raises(ValueError, match=role):
            IMAGE_CONDITIONING(profile, image=None, mode=mode, **BASE)
