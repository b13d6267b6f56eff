"""Text-to-image through a live app subprocess and gradio_client: parity, PNG metadata, sweep, errors."""

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from live_app import live_app
from PIL import Image

from reporting.metadata import read_png_metadata

pytestmark = pytest.mark.live

PROMPT = "a photo of a red cat"


@pytest.fixture(scope="module")
def client(tiny_sd_folder, tmp_path_factory):
    profile = tmp_path_factory.mktemp("app_profile") / "tiny.toml"
    profile.write_text(f'sd = "{tiny_sd_folder}"\n[limits]\nmax_pixels = 4096\nmax_steps = 10\nmax_images = 2\n')
    with live_app(profile, env={"OMP_NUM_THREADS": "1"}) as c:
        yield c


def test_text_to_image_endpoint_matches_pipeline_and_keeps_png_text(client, tiny_sd_folder):
    gallery, _plot, meta, seed, _overlays, snippet, _saturation, _compare = client.predict(
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


def _pngs(gallery) -> list[np.ndarray]:
    out = []
    for item in gallery:
        with Image.open(item["image"]) as img:
            out.append(np.asarray(img.convert("RGB"), dtype=np.int16))
    return out


def _max_diff(got: list[np.ndarray], expected) -> int:
    return max(int(np.abs(a - np.asarray(b, dtype=np.int16)).max()) for a, b in zip(got, expected, strict=True))


def test_new_methods_through_the_endpoint_match_diffusers_within_one_level(client, tiny_sd_folder):
    """APG (diffusers' guider in a written-out SD loop) and PAG (StableDiffusionPAGPipeline), through
    gradio_client and PNG: every pixel within 1/255; the other method's reference is far off."""
    from diffusers import StableDiffusionPAGPipeline
    from diffusers.guiders import AdaptiveProjectedGuidance
    from diffusers.guiders.adaptive_projected_guidance import MomentumBuffer
    from test_methods import NEGATIVE, guider_combine, reference_loop

    from models.loading.sd import load_sd
    from models.runtime import pick_runtime

    common = dict(prompt=PROMPT, negative_prompt=NEGATIVE, steps=4, width=32, height=32, seed=3, num_images=2,
                  scheduler="ddim", attention_token="", api_name="/text_to_image")
    # diffusers' APG with use_original_formulation takes w − 1 (it adds its update to c): ours at 7.5 is its 6.5.
    apg_gallery, *_ = client.predict(guidance="apg", scale=7.5, eta=0.0, apg_momentum=-0.5, apg_norm_threshold=15.0,
                                     **common)
    pag_gallery, *_ = client.predict(guidance="cfg", scale=5.0, pag_scale=3.0, pag_layers="mid", **common)

    sd = load_sd(str(tiny_sd_folder), pick_runtime("cpu", "float32"))
    guider = AdaptiveProjectedGuidance(guidance_scale=6.5, use_original_formulation=True, eta=0.0,
                                       adaptive_projected_guidance_momentum=-0.5,
                                       adaptive_projected_guidance_rescale=15.0)
    guider.momentum_buffer = MomentumBuffer(-0.5)
    apg_ref = reference_loop(sd, guider_combine(guider, 4), 4, 3, 2)
    apg_ref = [(x.permute(1, 2, 0).numpy() * 255).round().clip(0, 255) for x in apg_ref]
    pipe = StableDiffusionPAGPipeline.from_pretrained(tiny_sd_folder, safety_checker=None,
                                                      requires_safety_checker=False, pag_applied_layers="mid")
    pipe.set_progress_bar_config(disable=True)
    pag_ref = pipe(PROMPT, negative_prompt=NEGATIVE, guidance_scale=5.0, pag_scale=3.0, num_inference_steps=4,
                   height=32, width=32, num_images_per_prompt=2, generator=torch.Generator().manual_seed(3)).images

    apg_png, pag_png = _pngs(apg_gallery), _pngs(pag_gallery)
    assert _max_diff(apg_png, apg_ref) <= 1
    assert _max_diff(pag_png, pag_ref) <= 1
    assert _max_diff(apg_png, pag_ref) > 8  # the comparison can fail: another method's images are far off
