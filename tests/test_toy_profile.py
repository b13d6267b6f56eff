"""The shipped toy profile: every model loads through the app's own loaders and does its job briefly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from live_app import live_app
from PIL import Image

from condition.control import canny_map
from condition.labels import class_id_in
from condition.shapes_world import CLASS_NAMES, COLOUR_NAMES, SHAPE_NAMES, make_batch, to_tensor_range
from guidance.rules import GuidanceRule
from models.architectures.toy_judge import load_judge
from models.loading.controlnet import controlnet_for
from models.loading.image import load_image_variations
from models.loading.sd import load_role_sd
from models.profiles import ROOT, load_profile, toy_available
from models.runtime import pick_runtime
from pipelines.classifier_guidance import classifier_guided_sample
from pipelines.controlnet import ControlSpec, controlnet_to_image
from pipelines.image_conditioning import variations
from pipelines.text_to_image import text_to_image
from pipelines.toy_guidance import ddpm_step_variance, load_toy_guided

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
    # Eleven small models (sd, sd_t5, flow, distilled, dit, …); a clone of the Space stays quick.
    assert sum(p.stat().st_size for p in files) < 60e6
    # Compact files (the UNet is stored in float16): the Hub takes them without Git LFS/Xet, so a plain git push
    # deploys the Space.
    assert all(p.stat().st_size < 8 * 2**20 for p in files), max(files, key=lambda p: p.stat().st_size)
    assert not (TOY / "sd" / "vae").exists()  # pixel space


def test_text_to_image_through_the_profile_loader():
    sd = load_role_sd(load_profile("toy"), CPU32)
    out = text_to_image(sd, "a red circle", rule=GuidanceRule("perp-cfg", 4.0), steps=3, num_images=2, seed=0)
    assert out.images.shape == (2, 3, 32, 32) and torch.isfinite(out.images).all()


@pytest.mark.slow
def test_toy_samples_look_like_the_world():
    """Quality, not just shapes: CFG samples of eight prompts are what they say, on the world's dark background.

    DDIM 25 steps, η = 0, as the tab's default. The judge is a separate CNN (never used for guidance). The world's
    backgrounds are 4–35 per channel; the first toy UNet (ε-prediction) drew grey or tinted ones at 60–70.
    """
    sd = load_role_sd(load_profile("toy"), CPU32)
    assert sd.scheduler_config["prediction_type"] == "v_prediction"
    judge = load_judge(TOY / "judge")
    classes = [CLASS_NAMES.index(n) for n in ("red circle", "green square", "blue triangle", "yellow cross",
                                                "magenta circle", "cyan square", "red triangle", "blue cross")]
    hits, backgrounds = 0, []
    for k, c in enumerate(classes):
        colour, shape = c // len(SHAPE_NAMES), c % len(SHAPE_NAMES)
        prompt = f"a {COLOUR_NAMES[colour]} {SHAPE_NAMES[shape]}"
        x = text_to_image(sd, prompt, rule=GuidanceRule("cfg", 4.0), steps=25, num_images=2, seed=k).images
        pred_colour, pred_shape = judge.predict(x * 2 - 1)
        hits += int(((pred_colour == colour) & (pred_shape == shape)).sum())
        border = torch.cat([x[..., :2, :].flatten(2), x[..., -2:, :].flatten(2)], dim=2)  # top and bottom rows
        backgrounds += (border.median(dim=2).values.max(dim=1).values * 255).tolist()
    print(f"judge: {hits}/16 correct; background (brightest channel of the border median): {backgrounds}")
    assert hits >= 13
    assert max(backgrounds) < 50


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


@pytest.mark.live
def test_toy_app_text_to_image_controlnet_and_variations(toy_client):
    images, *_ = toy_client.predict(prompt="a blue square", steps=25, api_name="/text_to_image")
    assert Image.open(images[0]["image"]).size == (32, 32)
    _, images, *_ = toy_client.predict(steps=25, api_name="/controlnet")  # the default world scene, canny-preprocessed
    assert Image.open(images[0]["image"]).size == (32, 32)
    images, scores, *_ = toy_client.predict(api_name="/image_conditioning")
    assert Image.open(images[0]["image"]).size == (32, 32)
    # The tiny CLIP's read-out: one cosine per output image, against the input image.
    assert len(scores["output_vs_input_image"]) == 1 and -1 <= scores["output_vs_input_image"][0] <= 1
    # Classifier guidance: the UNet's empty-prompt branch guided by the world classifiers.
    gallery, _, meta, seed, *_ = toy_client.predict(class_name="a Blue  Square", steps="ddim10", compare_clean=True,
                                                api_name="/classifier_guidance")  # fmt: skip
    assert [Image.open(g["image"]).size for g in gallery] == [(32, 32)] * 2 and seed == 0
    assert meta["parameters"]["class_name"] == "blue square" and set(meta["runs"]) == {"noise-aware", "clean"}


def test_classifier_guidance_through_the_profile_loader():
    models = load_toy_guided(load_profile("toy"), CPU32)
    assert models.class_names == CLASS_NAMES and models.image_size == 32
    target = CLASS_NAMES.index("green triangle")
    common = dict(class_id=target, steps="ddim10", seed=0, num_images=4, runtime=CPU32)
    unguided = classifier_guided_sample(models, classifier_scale=0.0, **common)
    guided = classifier_guided_sample(models, classifier_scale=10.0, compare_clean=True, **common)
    # The guidance must pull the whole batch toward the target class (the classifier's own verdict on x_0).
    assert guided.guided.final_log_prob.mean() > unguided.guided.final_log_prob.mean() + 1.0
    assert guided.clean is not None and guided.clean.final_clean_log_prob is not None
    assert guided.metadata()["runs"]["noise-aware"]["last_step_top1"][0] in CLASS_NAMES
    with pytest.raises(ValueError, match="spaces steps evenly"):
        classifier_guided_sample(models, classifier_scale=1.0, **{**common, "steps": "5,5"})


def test_ddpm_guidance_variance_is_the_schedulers_own():
    from diffusers import DDPMScheduler

    sd = load_role_sd(load_profile("toy"), CPU32)
    scheduler = DDPMScheduler.from_config(sd.scheduler_config)
    scheduler.set_timesteps(25)
    variance = ddpm_step_variance(scheduler)
    x = torch.zeros(1, 3, 2, 2)
    for t in scheduler.timesteps:
        # what DDPMScheduler.step samples its noise with ("fixed_small")
        assert torch.allclose(variance(t, x, x), scheduler._get_variance(int(t)), rtol=1e-6, atol=0)


def test_world_class_names_resolve():
    assert class_id_in("A Red  circle", -1, CLASS_NAMES) == CLASS_NAMES.index("red circle")
    assert class_id_in("ignored", 5, CLASS_NAMES) == 5
    with pytest.raises(ValueError, match="the classes are: red circle"):
        class_id_in("purple circle", -1, CLASS_NAMES)
    with pytest.raises(ValueError, match="between 0 and 23"):
        class_id_in("red circle", 24, CLASS_NAMES)
