"""CLIP image conditioning against diffusers' own pipelines on tiny components: variations, IP-Adapter, cross-modal."""

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionImageVariationPipeline, StableDiffusionPipeline
from PIL import Image

from condition.image_embed import match_norm, preprocess, slerp
from condition.images import sanitize_image
from guidance.rules import GuidanceRule
from models.loading.image import load_clip_source, load_ip_adapter_source, load_variations_source
from models.loading.sd import ModelUnavailable, load_sd
from models.runtime import pick_runtime
from pipelines.image_conditioning import (
    clip_scores,
    cross_modal,
    cross_modal_embedding,
    ip_adapter,
    ip_adapter_pixels,
    variation_pixels,
    variations,
)
from pipelines.schedulers import make_scheduler
from pipelines.text_to_image import text_to_image
from testing.tiny import build_tiny_image_models, build_tiny_ip_adapter

CPU32 = pick_runtime("cpu", "float32")
KW = dict(steps=3, width=32, height=32)


def photo(w: int = 48, h: int = 40, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(0)
    array = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    array[: h // 2, :, 0] = 230  # a red band, so it is not pure noise
    return Image.fromarray(array).convert(mode)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_image_models(tmp_path_factory.mktemp("tiny_image"))


@pytest.fixture(scope="module")
def vsd(tiny):
    return load_variations_source(str(tiny["variations"]), CPU32)


@pytest.fixture(scope="module")
def clip(tiny):
    return load_clip_source(str(tiny["clip"]), CPU32)


def test_preprocessing_is_the_model_cards():
    torchvision = pytest.importorskip("torchvision")
    from torchvision import transforms

    img = photo()
    tform = transforms.Compose([
        transforms.ToTensor(),
        transforms.Resize((32, 32), interpolation=transforms.InterpolationMode.BICUBIC, antialias=False),
        transforms.Normalize([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]),
    ])
    assert torchvision is not None
    assert (preprocess(img, 32) - tform(img).unsqueeze(0)).abs().max().item() < 1e-6


def test_odd_images_become_rgb_and_bad_ones_are_clear_errors():
    """The one upload sanitiser (control maps and CLIP inputs alike): conversions by one rule, clear refusals."""
    for mode in ("RGBA", "L", "P", "I;16"):
        img = photo().convert(mode) if mode != "I;16" else Image.fromarray(
            (np.arange(48 * 40).reshape(40, 48) * 30).astype(np.uint16))
        assert sanitize_image(img).mode == "RGB"
    clear = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    assert sanitize_image(clear).getpixel((0, 0)) == (255, 255, 255)  # transparent shows as white, not black
    # 16-bit greys scale by the type's range, so a dark 16-bit image stays dark (not stretched to its maximum).
    dark = Image.fromarray(np.full((16, 16), 1000, dtype=np.uint16))
    assert sanitize_image(dark).getpixel((0, 0)) == (4, 4, 4)  # 1000 / 65535 · 255 = 3.9
    with pytest.raises(ValueError, match="upload"):
        sanitize_image(None)
    with pytest.raises(ValueError, match="at least"):
        sanitize_image(Image.new("RGB", (1, 1)))
    with pytest.raises(ValueError, match="at most 5,000"):
        sanitize_image(Image.new("RGB", (100, 100)), max_pixels=5000)
    with pytest.raises(ValueError, match="could not be read"):
        sanitize_image("not an image")


@pytest.mark.parametrize("scheduler", ["ddim", "euler"])
def test_variations_match_image_variation_pipeline(tiny, vsd, scheduler):
    pipe = StableDiffusionImageVariationPipeline.from_pretrained(tiny["variations"], safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler(scheduler, vsd.scheduler_config)
    pixels = variation_pixels(vsd, photo())
    expected = pipe(pixels, guidance_scale=3.0, num_inference_steps=3, height=32, width=32, num_images_per_prompt=2,
                    output_type="pt", generator=torch.Generator("cpu").manual_seed(7)).images
    ours = variations(vsd, photo(), rule=GuidanceRule("cfg", 3.0), num_images=2, seed=7, scheduler=scheduler,
                      **KW).images
    assert ours.shape == expected.shape == (2, 3, 32, 32)
    assert (ours - expected).abs().max().item() <= 1e-5
    other = variations(vsd, photo(), rule=GuidanceRule("cfg", 3.0), num_images=2, seed=8, scheduler=scheduler,
                       **KW).images
    assert (other - expected).abs().max().item() > 1e-3


def test_variations_perp_cfg(vsd):
    a = variations(vsd, photo(), rule=GuidanceRule("cfg", 4.0), seed=1, **KW)
    b = variations(vsd, photo(), rule=GuidanceRule("perp-cfg", 4.0, eta=1.0), seed=1, **KW)
    c = variations(vsd, photo(), rule=GuidanceRule("perp-cfg", 4.0, eta=0.0), seed=1, **KW)
    assert (a.images - b.images).abs().max().item() <= 1e-5
    assert (a.images - c.images).abs().max().item() > 1e-4
    assert c.result.series("delta_perp").shape == (3, 1)


@pytest.fixture(scope="module")
def ipa_folder(tiny_sd_folder, tmp_path_factory):
    sd = load_sd(str(tiny_sd_folder), CPU32)
    return build_tiny_ip_adapter(tmp_path_factory.mktemp("tiny_ipa") / "IP-Adapter", sd.unet)


@pytest.fixture(scope="module")
def ipa(tiny_sd_folder, ipa_folder):
    return load_ip_adapter_source(load_sd(str(tiny_sd_folder), CPU32), str(ipa_folder), CPU32)


def test_ip_adapter_scale_zero_is_text_to_image(tiny_sd_folder, ipa):
    sd = load_sd(str(tiny_sd_folder), CPU32)
    rule = GuidanceRule("cfg", 7.5)
    plain = text_to_image(sd, "a red cat", negative_prompt="dog", rule=rule, seed=3, num_images=2, **KW).images
    zero = ip_adapter(ipa, photo(), "a red cat", negative_prompt="dog", image_scale=0.0, rule=rule, seed=3,
                      num_images=2, **KW).images
    assert torch.equal(plain, zero)
    some = ip_adapter(ipa, photo(), "a red cat", negative_prompt="dog", image_scale=0.6, rule=rule, seed=3,
                      num_images=2, **KW).images
    assert (some - plain).abs().max().item() > 1e-3
    # the shared text-to-image UNet is untouched by the adapter
    again = text_to_image(sd, "a red cat", negative_prompt="dog", rule=rule, seed=3, num_images=2, **KW).images
    assert torch.equal(plain, again)


def test_ip_adapter_matches_load_ip_adapter_pipeline(tiny_sd_folder, ipa_folder, ipa):
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_folder, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_ip_adapter(str(ipa_folder), subfolder="models", weight_name="ip-adapter_sd15.safetensors")
    pipe.set_ip_adapter_scale(0.6)
    pixels = ip_adapter_pixels(ipa, photo())
    expected = pipe("a red cat", negative_prompt="dog", ip_adapter_image=pixels, guidance_scale=7.5,
                    num_inference_steps=3, height=32, width=32, num_images_per_prompt=2, output_type="pt",
                    generator=torch.Generator("cpu").manual_seed(5)).images
    ours = ip_adapter(ipa, photo(), "a red cat", negative_prompt="dog", image_scale=0.6,
                      rule=GuidanceRule("cfg", 7.5), seed=5, num_images=2, **KW).images
    assert ours.shape == expected.shape
    assert (ours - expected).abs().max().item() <= 1e-5


def test_ip_adapter_rejects_scale_out_of_range(ipa):
    with pytest.raises(ValueError, match="image_scale"):
        ip_adapter(ipa, photo(), "x", image_scale=2.0, rule=GuidanceRule("cfg", 5.0), **KW)


def test_missing_ip_adapter_weights_is_model_unavailable(tiny_sd_folder, tmp_path):
    with pytest.raises(ModelUnavailable, match="ip_adapter"):
        load_ip_adapter_source(load_sd(str(tiny_sd_folder), CPU32), str(tmp_path), CPU32)


def test_cross_modal(vsd, clip):
    rule = GuidanceRule("cfg", 3.0)
    zero = cross_modal(vsd, clip, photo(), "a red cat", 0.0, rule=rule, seed=2, **KW).images
    plain = variations(vsd, photo(), rule=rule, seed=2, **KW).images
    assert torch.equal(zero, plain)
    half = cross_modal(vsd, clip, photo(), "a red cat", 0.5, rule=rule, seed=2, num_images=2, **KW).images
    again = cross_modal(vsd, clip, photo(), "a red cat", 0.5, rule=rule, seed=2, num_images=2, **KW).images
    assert half.shape == (2, 3, 32, 32) and torch.equal(half, again)
    assert (half[:1] - plain).abs().max().item() > 1e-4
    text_only = cross_modal(vsd, clip, None, "a red cat", 1.0, rule=rule, seed=2, **KW).images
    assert text_only.shape == (1, 3, 32, 32)
    emb_img = cross_modal_embedding(vsd, clip, photo(), "a red cat", 0.0)
    emb_mix = cross_modal_embedding(vsd, clip, photo(), "a red cat", 0.7)
    assert torch.allclose(emb_mix.norm(), emb_img.norm(), rtol=1e-5)  # matched length throughout
    with pytest.raises(ValueError, match="needs an image"):
        cross_modal_embedding(vsd, clip, None, "a red cat", 0.5)
    with pytest.raises(ValueError, match="mix"):
        cross_modal_embedding(vsd, clip, photo(), "a red cat", 1.5)


def test_slerp_and_norm_matching():
    a, b = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    b3 = match_norm(b, a)
    assert torch.allclose(b3, torch.tensor([[0.0, 3.0]]))
    mid = slerp(a, b3, 0.5)
    assert torch.allclose(mid, torch.tensor([[3 / 2**0.5, 3 / 2**0.5]]), atol=1e-6)
    assert torch.equal(slerp(a, b3, 0.0), a) and torch.equal(slerp(a, b3, 1.0), b3)
    assert torch.allclose(slerp(a, a * 2, 0.5), a * 1.5)  # parallel: the linear limit


def test_clip_scores(clip):
    scores = clip_scores(clip, [photo(), photo(32, 32, "L")], photo(), "a red cat")
    assert len(scores["output_vs_input_image"]) == 2
    assert scores["output_vs_input_image"][0] == pytest.approx(1.0, abs=1e-5)
    assert -1 <= scores["input_vs_prompt"] <= 1 and len(scores["output_vs_prompt"]) == 2
    none = clip_scores(clip, [photo()], None, "")
    assert none["output_vs_input_image"] is None and none["input_vs_prompt"] is None
