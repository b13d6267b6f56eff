"""Text-to-image through a live app subprocess and gradio_client: parity, PNG metadata, sweep, errors."""

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from gradio_client.exceptions import AppError
from live_app import live_app
from PIL import Image

from pipelines.metadata import read_png_metadata

PROMPT = "a photo of a red cat"


@pytest.fixture(scope="module")
def client(tiny_sd_folder, tmp_path_factory):
    profile = tmp_path_factory.mktemp("app_profile") / "tiny.toml"
    profile.write_text(f'sd = "{tiny_sd_folder}"\n[limits]\nmax_pixels = 4096\nmax_steps = 10\nmax_images = 2\n')
    with live_app(profile, env={"OMP_NUM_THREADS": "1"}) as c:
        yield c


def test_text_to_image_endpoint_matches_pipeline_and_keeps_png_text(client, tiny_sd_folder):
    gallery, _plot, meta, seed, _overlays, snippet = client.predict(
        prompt=PROMPT, negative_prompt="blue square", guidance="cfg", scale=7.5, eta=0.0, basis="uncond",
        rescale=0.7, steps=3, width=32, height=32, seed=21, scheduler="ddim", num_images=2, attention_token="",
        api_name="/text_to_image",
    )
    assert seed == 21 and meta["seed"] == 21 and "/text_to_image" in snippet
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_folder, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"  # the folder's own DDIM config, as the app uses
    expected = pipe(PROMPT, negative_prompt="blue square", guidance_scale=7.5, guidance_rescale=0.7,
                    num_inference_steps=3, height=32, width=32, num_images_per_prompt=2,
                    generator=torch.Generator("cpu").manual_seed(21)).images
    assert len(gallery) == 2
    for item, ref in zip(gallery, expected, strict=True):
        with Image.open(item["image"]) as img:
            assert img.format == "PNG"
            stored = read_png_metadata(img)
            assert stored["parameters"]["seed"] == 21 and stored["parameters"]["rescale"] == 0.7
            assert PROMPT in img.text["parameters"]
            diff = np.abs(np.asarray(img.convert("RGB"), dtype=np.int16) - np.asarray(ref, dtype=np.int16))
        assert diff.max() <= 1


def test_guidance_sweep_endpoint(client):
    grid, meta, seed = client.predict(
        prompt=PROMPT, negative_prompt="", scales="1, 7.5", eta=0.0, basis="uncond", rescale=0.0, steps=2,
        width=32, height=32, seed=4, scheduler="euler", api_name="/guidance_sweep",
    )
    assert seed == 4 and meta["batched_rows"] == 4
    assert [c["rule"] for c in meta["cells"]] == ["cfg", "cfg", "perp-cfg", "perp-cfg"]
    with Image.open(grid) as img:
        assert img.format == "PNG" and read_png_metadata(img)["parameters"]["scales"] == "1, 7.5"


def test_bad_input_is_a_clear_error_and_the_app_keeps_serving(client):
    with pytest.raises(AppError, match="multiple of 8"):
        client.predict(prompt="x", width=33, height=32, steps=2, api_name="/text_to_image")
    with pytest.raises(AppError, match="scale"):
        client.predict(prompt="x", scales="1, nan", width=32, height=32, steps=2, api_name="/guidance_sweep")
    *_, meta, seed, _, _ = client.predict(prompt="", width=32, height=32, steps=1, seed=-1, api_name="/text_to_image")
    assert seed >= 0 and meta["seed"] == seed
