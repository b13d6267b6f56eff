"""The one sampler loop reproduces diffusers' StableDiffusionPipeline on tiny components."""

import pytest
import torch
from diffusers import StableDiffusionPipeline

from guidance.rules import GuidanceRule
from models.loading import load_sd
from models.runtime import pick_runtime
from pipelines.schedulers import make_scheduler
from pipelines.text_to_image import text_to_image

CPU32 = pick_runtime("cpu", "float32")


@pytest.fixture(scope="module")
def reference(tiny_sd_folder):
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_folder, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize(
    "scheduler,negative,phi",
    [
        ("ddim", "", 0.0),
        ("ddim", "blue square", 0.0),
        ("ddim", "", 0.7),
        ("euler", "", 0.0),
        ("dpm++2m", "dog", 0.7),
        ("euler-a", "", 0.0),
    ],
)
def test_loop_matches_stable_diffusion_pipeline(tiny_sd_folder, reference, scheduler, negative, phi):
    sd = load_sd(str(tiny_sd_folder), CPU32)
    reference.scheduler = make_scheduler(scheduler, sd.scheduler_config)
    expected = reference(
        "a photo of a red cat", negative_prompt=negative or None, guidance_scale=7.5, guidance_rescale=phi,
        num_inference_steps=6, height=32, width=32, num_images_per_prompt=2, output_type="pt",
        generator=torch.Generator("cpu").manual_seed(123),
    ).images
    ours = text_to_image(
        sd, "a photo of a red cat", negative_prompt=negative, rule=GuidanceRule("cfg", 7.5, rescale=phi),
        steps=6, width=32, height=32, num_images=2, scheduler=scheduler, seed=123,
    ).images
    assert ours.shape == expected.shape == (2, 3, 32, 32)
    assert (ours - expected).abs().max().item() <= 1e-5
    # The comparison is not vacuous: a different seed moves the output.
    other = text_to_image(
        sd, "a photo of a red cat", negative_prompt=negative, rule=GuidanceRule("cfg", 7.5, rescale=phi),
        steps=6, width=32, height=32, num_images=2, scheduler=scheduler, seed=124,
    ).images
    assert (other - expected).abs().max().item() > 1e-3


def test_perp_cfg_with_eta_one_is_cfg(tiny_sd_folder):
    sd = load_sd(str(tiny_sd_folder), CPU32)
    kw = dict(steps=4, width=32, height=32, seed=5)
    a = text_to_image(sd, "a red cat", rule=GuidanceRule("cfg", 6.0), **kw).images
    b = text_to_image(sd, "a red cat", rule=GuidanceRule("perp-cfg", 6.0, eta=1.0), **kw).images
    c = text_to_image(sd, "a red cat", rule=GuidanceRule("perp-cfg", 6.0, eta=0.0), **kw).images
    assert (a - b).abs().max().item() <= 1e-5
    assert (a - c).abs().max().item() > 1e-4


def test_trace_records_diagnostics(tiny_sd_folder):
    sd = load_sd(str(tiny_sd_folder), CPU32)
    seen = []
    out = text_to_image(sd, "a red cat", rule=GuidanceRule("perp-cfg", 5.0), steps=3, width=32, height=32,
                        num_images=2, callback=lambda s: seen.append(s.step_index))
    assert seen == [0, 1, 2]
    assert out.result.series("delta_perp").shape == (3, 2)
    assert out.result.series("x0_saturation").shape == (3, 2)
    assert (out.result.series("delta_perp") > 0).all()
