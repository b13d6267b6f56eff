"""The one sampler loop reproduces diffusers' StableDiffusionPipeline on tiny components."""

import dataclasses

import pytest
import torch
from diffusers import StableDiffusionPipeline

from guidance.rules import GuidanceRule
from models.loading.sd import load_sd
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


@pytest.mark.parametrize("folder", ["tiny_sd_folder", "v_folder"])
def test_perp_cfg_with_eta_one_is_cfg(folder, request):
    sd = load_sd(str(request.getfixturevalue(folder)), CPU32)
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


@pytest.fixture(scope="module")
def v_folder(tmp_path_factory):
    from testing.tiny import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("tiny_sd_v") / "sd", prediction_type="v_prediction")


@pytest.mark.parametrize("scheduler", ["ddim", "euler", "dpm++2m"])
def test_v_prediction_model_matches_the_pipeline(v_folder, scheduler):
    """A v-predicting UNet: the loop guides in ε (converted in float32) and hands the scheduler v again."""
    sd = load_sd(str(v_folder), CPU32)
    assert sd.scheduler_config["prediction_type"] == "v_prediction"
    pipe = StableDiffusionPipeline.from_pretrained(v_folder, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler(scheduler, sd.scheduler_config)
    kw = dict(num_inference_steps=6, height=32, width=32, output_type="pt")
    expected = pipe("a red cat", guidance_scale=7.5, generator=torch.Generator("cpu").manual_seed(9), **kw).images
    ours = text_to_image(sd, "a red cat", rule=GuidanceRule("cfg", 7.5), steps=6, width=32, height=32,
                         scheduler=scheduler, seed=9).images
    assert (ours - expected).abs().max().item() <= 1e-5
    # Read as an ε-model, the same weights give another image: the conversion is not a no-op.
    eps_sd = dataclasses.replace(sd, scheduler_config={**sd.scheduler_config, "prediction_type": "epsilon"})
    other = text_to_image(eps_sd, "a red cat", rule=GuidanceRule("cfg", 7.5), steps=6, width=32, height=32,
                          scheduler=scheduler, seed=9).images
    assert (other - expected).abs().max().item() > 1e-3
