"""Classifier-guided ImageNet sampling on the tiny golden ADM pair, labels, and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from golden import GOLDEN_ADM, golden_adm_mark

from condition.labels import class_id_for, class_name, display_names, imagenet_classes, resolve_class, suggestions
from models.loading.adm import load_adm_pair, role_spec
from models.loading.clean_classifier import imagenet_clean_guide, load_clean_classifier
from models.loading.sd import ModelUnavailable
from models.profiles import load_profile
from pipelines.classifier_guidance import classifier_guided_sample, parse_steps
from reporting.plots import log_prob_frames

GOLDEN = GOLDEN_ADM
needs_golden = golden_adm_mark()
# The tiny classifier departs from create_classifier's fixed layout (golden README: "overrides").
TINY_CLASSIFIER_OVERRIDES = dict(classifier_channel_mult="1,1,2", classifier_num_head_channels=32)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


def _inline(table: dict) -> str:
    return "{ " + ", ".join(f"{json.dumps(k)} = {_inline(v) if isinstance(v, dict) else _toml_value(v)}"
                            for k, v in table.items()) + " }"


def write_tiny_profile(folder: Path, *, classifier_checkpoint: str = "tiny_classifier.pt",
                       max_steps: int = 50, max_guided_steps: int | None = None) -> Path:
    """A profile whose two ADM roles are the tiny golden checkpoints (both model choices map to them)."""
    flags = {n: json.loads((GOLDEN / f"tiny_{n}.json").read_text())["flags"]
             for n in ("cond_diffusion", "uncond_diffusion", "classifier")}
    classifier = {"source": str(GOLDEN / classifier_checkpoint),
                  "flags": {**flags["classifier"], **TINY_CLASSIFIER_OVERRIDES}}
    diffusion = {"source": str(GOLDEN / "tiny_cond_diffusion.pt"), "flags": flags["cond_diffusion"],
                 "256x256-uncond": {"source": str(GOLDEN / "tiny_uncond_diffusion.pt"),
                                    "flags": flags["uncond_diffusion"]}}
    path = folder / "tiny_adm.toml"
    path.write_text(
        f"adm_diffusion = {_inline(diffusion)}\nadm_classifier = {_inline(classifier)}\n\n"
        f'[meta]\ndescription = "tiny golden ADM checkpoints"\n\n'
        f"[limits]\nmax_pixels = 16384\nmax_steps = {max_steps}\nmax_images = 4\ntimeout_s = 120\n"
        + (f"max_guided_steps = {max_guided_steps}\n" if max_guided_steps is not None else "")
    )
    return path




@pytest.fixture(scope="module")
def tiny_profile(tmp_path_factory):
    return load_profile(write_tiny_profile(tmp_path_factory.mktemp("profile")))


@pytest.fixture(scope="module")
def tiny_pair(tiny_profile):
    return load_adm_pair(tiny_profile, "64x64")


# ----------------------------------------------------------------------------- labels


def test_labels_lookup_offline() -> None:
    names = imagenet_classes()
    assert len(names) == 1000 and len(set(display_names())) == 1000
    assert class_id_for("golden retriever") == 207 == class_id_for("  Golden_Retriever ")
    assert class_name(207) == "golden retriever"
    assert class_id_for("crane bird") == 134 and class_id_for("crane") == 517
    assert class_id_for("42") == 42  # a bare id typed into the name box
    assert resolve_class("tench", None) == 0 and resolve_class("tench", 207) == 207
    for name in display_names():
        assert display_names()[class_id_for(name)] == name


def test_unknown_class_name_suggests_close_matches() -> None:
    with pytest.raises(ValueError, match="golden retriever") as err:
        class_id_for("golden retreiver")
    assert "Did you mean" in str(err.value)
    assert "Labrador retriever" in suggestions("retriever", n=10)
    with pytest.raises(ValueError, match="empty"):
        class_id_for("  ")


@pytest.mark.parametrize("bad", [-2, 1000, 10**9, 3.5, float("nan"), "seven", True])
def test_class_id_outside_range(bad) -> None:
    with pytest.raises(ValueError, match="0 and 999"):
        resolve_class(None, bad)


def test_class_id_minus_one_means_use_the_name() -> None:
    # The UI's number box cannot be left empty, so −1 is its "not set" value.
    assert resolve_class("golden retriever", -1) == resolve_class("golden retriever", None) == 207
    assert resolve_class("golden retriever", 1) == 1


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize("steps,kept", [("250", 250), ("ddim25", 25), ("10,5", 15), (50, 50), (" DDIM5 ", 5)])
def test_parse_steps(steps, kept) -> None:
    assert parse_steps(steps)[1] == kept


@pytest.mark.parametrize("steps", ["0", "ddim0", "1001", "ddim2000", "abc", "", "-5", "1e3", "ddim", "10,,5", "5.5"])
def test_steps_outside_respacing_limits(steps) -> None:
    with pytest.raises(ValueError, match="steps"):
        parse_steps(steps)


def test_steps_over_the_server_cap() -> None:
    with pytest.raises(ValueError, match="at most 50"):
        parse_steps("100", max_steps=50)


@needs_golden
@pytest.mark.parametrize("scale", [-1.0, float("nan"), float("inf"), "big"])
def test_bad_scale_rejected_before_sampling(tiny_pair, scale) -> None:
    with pytest.raises(ValueError, match="classifier_scale"):
        classifier_guided_sample(tiny_pair, class_id=1, classifier_scale=scale, steps="ddim2", seed=0)


@needs_golden
def test_bad_library_arguments(tiny_pair) -> None:
    common = dict(class_id=1, classifier_scale=1.0, steps="ddim2")
    for kwargs, match in ((dict(sampler="euler"), "sampler"), (dict(num_images=0), "num_images"),
                          (dict(seed=-3), "seed"), (dict(class_id=1000), "0 and 999")):
        with pytest.raises(ValueError, match=match):
            classifier_guided_sample(tiny_pair, **{**common, **kwargs})


@needs_golden
def test_checkpoint_that_does_not_match_its_flags(tmp_path) -> None:
    # The diffusion checkpoint offered as the classifier: the message names the first mismatched keys.
    profile = load_profile(write_tiny_profile(tmp_path, classifier_checkpoint="tiny_cond_diffusion.pt"))
    with pytest.raises(ModelUnavailable, match=r"does not match its flags.*missing: .*unexpected: ") as err:
        load_adm_pair(profile, "64x64")
    assert "out.2.c_proj.weight" in str(err.value) or "input_blocks" in str(err.value)


def test_offline_release_url_names_the_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("CONDLAB_ADM_CACHE", str(tmp_path / "adm"))
    with pytest.raises(ModelUnavailable, match="64x64_diffusion.pt") as err:
        load_adm_pair(None, "64x64")
    # Where to put it, by the setting that moves the folder: never the server's own path (it may be a remote user).
    assert "into CONDLAB_ADM_CACHE" in str(err.value) and str(tmp_path) not in str(err.value)
    assert role_spec(None, "adm_classifier", "256x256-uncond").flags["classifier_depth"] == 2
    with pytest.raises(ValueError, match="model must be one of"):
        role_spec(None, "adm_diffusion", "1024x1024")


def test_offline_resnet50_names_the_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ModelUnavailable, match=r"resnet50-.*\.pth") as err:
        load_clean_classifier()
    assert "TORCH_HOME/hub/checkpoints" in str(err.value) and str(tmp_path) not in str(err.value)


# ----------------------------------------------------------------------------- sampling


@needs_golden
def test_guidance_raises_final_log_prob_and_is_deterministic(tiny_pair) -> None:
    common = dict(class_id=7, steps="ddim10", sampler="ddim", seed=0, num_images=1)
    unguided = classifier_guided_sample(tiny_pair, classifier_scale=0.0, **common)
    guided = classifier_guided_sample(tiny_pair, classifier_scale=100.0, **common)
    again = classifier_guided_sample(tiny_pair, classifier_scale=100.0, **common)

    run = guided.guided
    assert run.images.shape == (1, 3, 32, 32) and 0 <= run.images.min() and run.images.max() <= 1
    assert run.log_prob.shape == (10, 1) and run.top5_ids.shape == (10, 1, 5)
    assert run.timesteps[0] > run.timesteps[-1] == 0  # networks saw original-scale t, noisy → clean
    assert np.all(np.diff(run.top5_log_prob, axis=-1) <= 0)  # top-5 sorted
    gain = run.final_log_prob - unguided.guided.final_log_prob
    assert (gain > 0).all(), f"guidance lowered log p(target): {gain.tolist()}"
    assert torch.equal(run.images, again.guided.images)
    np.testing.assert_array_equal(run.log_prob, again.guided.log_prob)
    other_seed = classifier_guided_sample(tiny_pair, classifier_scale=100.0, **{**common, "seed": 1})
    assert not torch.equal(run.images, other_seed.guided.images)
    json.dumps(guided.metadata())


@needs_golden
def test_ancestral_sampler_seeded_and_unconditional_choice(tiny_profile) -> None:
    pair = load_adm_pair(tiny_profile, "256x256-uncond")  # the profile maps this choice to the tiny uncond model
    assert not pair.class_cond
    runs = [classifier_guided_sample(pair, class_id=3, classifier_scale=10.0, steps="4", sampler="ddpm", seed=5)
            for _ in range(2)]
    assert torch.equal(runs[0].guided.images, runs[1].guided.images)
    assert runs[0].guided.log_prob.shape == (4, 1) and np.isfinite(runs[0].guided.log_prob).all()


@needs_golden
def test_compare_clean_with_a_random_resnet50(tiny_pair) -> None:
    from torchvision.models import resnet50

    torch.manual_seed(0)
    resnet = resnet50().eval().requires_grad_(False)
    steps = []
    result = classifier_guided_sample(
        tiny_pair, class_id=207, classifier_scale=5.0, steps="ddim3", sampler="ddim", seed=0,
        compare_clean=True, clean_guide=imagenet_clean_guide(resnet, 64), callback=lambda s: steps.append(s.step_index),
    )
    assert steps == [0, 1, 2, 0, 1, 2]  # one callback per step of each run
    clean = result.clean
    assert clean is not None and clean.guide == "clean"
    assert clean.log_prob.shape == clean.noise_aware_log_prob.shape == (3, 1)
    assert not np.allclose(clean.log_prob, clean.noise_aware_log_prob)  # two different judges
    assert not torch.equal(clean.images, result.guided.images)
    assert result.guided.final_clean_log_prob is not None and math.isfinite(float(clean.final_clean_log_prob[0]))
    meta = result.metadata()
    assert set(meta["runs"]) == {"noise-aware", "clean"}
    target, top5 = log_prob_frames(result)
    assert len(target) and len(top5) and set(top5.columns) == {"step", "value", "series"}


@needs_golden
def test_fp16_torso_runtime_path(tmp_path) -> None:
    # CUDA runs use_fp16 models with a float16 torso; the same code path, exercised on the CPU.
    from models.runtime import Runtime

    profile = load_profile(write_tiny_profile(tmp_path))
    profile.roles["adm_diffusion"]["flags"] = {**profile.roles["adm_diffusion"]["flags"], "use_fp16": True}
    runtime = Runtime(torch.device("cpu"), torch.float16)
    pair = load_adm_pair(profile, "64x64", runtime)
    assert pair.diffusion.dtype == torch.float16 and pair.classifier.dtype == torch.float32
    result = classifier_guided_sample(pair, class_id=7, classifier_scale=10.0, steps="ddim3", sampler="ddpm", seed=0,
                                      runtime=runtime)
    assert result.guided.images.dtype == torch.float32 and torch.isfinite(result.guided.images).all()
