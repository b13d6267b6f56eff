"""Live x̂0 previews through gradio_client: ``submit()`` sees them before the final images, ``predict()`` does not
need to know, and a latent model's previews come through its preview decoder."""

from __future__ import annotations

import numpy as np
import pytest
from live_app import live_app
from PIL import Image

from models.adapters.preview import fit_linear_preview


def _pixels(item: dict) -> np.ndarray:
    return np.asarray(Image.open(item["image"]).convert("RGB"), dtype=np.int16)


def previews_then_final(client, **request) -> tuple[list, tuple]:
    job = client.submit(**request, api_name="/text_to_image")
    outputs = list(job)
    assert job.status().success
    return outputs[:-1], outputs[-1]


def check_stream(previews: list, final: tuple, images: int) -> None:
    assert len(previews) >= 2, f"only {len(previews)} preview(s)"
    captions = [p[0][0]["caption"] for p in previews]
    assert all(c.startswith("x̂0 at step") for c in captions) and len(set(captions)) == len(captions)
    first, last = _pixels(previews[0][0][0]), _pixels(previews[-1][0][0])
    assert np.abs(first - last).max() > 8, "the previews should show x̂0 forming, not one frozen image"
    assert all(len(p[0]) == images for p in previews)
    assert all(o == {"__type__": "update"} for p in previews for o in p[1:])  # other outputs untouched
    assert len(final[0]) == images and final[3] == 0  # then the result: gallery … seed


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    with live_app("toy") as client:
        yield client


@pytest.mark.live
def test_toy_text_to_image_streams_previews_then_the_same_result(toy):
    previews, final = previews_then_final(toy, prompt="a red circle", steps=25, seed=0, num_images=2)
    check_stream(previews, final, images=2)
    direct = toy.predict(prompt="a red circle", steps=25, seed=0, num_images=2, api_name="/text_to_image")
    for streamed, plain in zip(final[0], direct[0], strict=True):
        assert np.array_equal(_pixels(streamed), _pixels(plain))


@pytest.fixture(scope="module")
def latent(everything_profile):
    with live_app(everything_profile) as client:
        yield client


@pytest.mark.live
def test_latent_model_streams_decoded_previews(latent):
    """Tiny SD (latent space): previews are x̂0 latents through the linear latent→RGB map, at the latent size."""
    previews, final = previews_then_final(latent, prompt="a red cat", steps=10, seed=0, num_images=1, width=32,
                                          height=32)
    check_stream(previews, final, images=1)
    assert Image.open(previews[0][0][0]["image"]).size == (16, 16)  # 1/2 of 32 px: the tiny VAE's factor
    assert "linear latent→RGB" in (final[2]["diagnostics_measured_on"])


def test_the_linear_map_is_the_least_squares_fit(tiny_sd_folder):
    """Fitted on the shipped photos through the model's own VAE: any change to it fits those photos worse."""
    import torch

    from models.adapters.preview import latent_colour_pairs
    from models.loading.sd import load_sd
    from models.runtime import pick_runtime

    vae = load_sd(str(tiny_sd_folder), pick_runtime("cpu", "float32")).vae
    weight, bias = fit_linear_preview(vae)
    assert weight.shape == (3, 4) and bias.shape == (3,)
    z, rgb = (t.double() for t in latent_colour_pairs(vae))
    assert len(z) > 100  # every latent cell of the photos

    def error(w, b):
        return (z @ w.double().T + b.double() - rgb).pow(2).sum().item()

    best = error(weight, bias)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        assert error(weight + 0.01 * torch.randn(3, 4, generator=gen), bias) > best
        assert error(weight, bias + 0.01 * torch.randn(3, generator=gen)) > best
