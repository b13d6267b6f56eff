"""Guidance distillation in the app: ``guidance="distilled"`` draws with a student in one model row per step, w is
handed to its embedding and kept within its training range, and ``/distill_compare`` counts both sides' rows.

The student here is built from the toy teacher as the training script starts it (its w embedding's output at zero):
it then predicts the teacher's conditional output whatever w is, which makes the plumbing exactly checkable; a
perturbed embedding shows the check can fail. The shipped student's quality is measured by
``scripts/eval/evaluate.py --methods distilled`` (docs/results.md).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel

from experiments.distillation import counting_rows
from models.loading.sd import ModelUnavailable, load_role_sd
from models.profiles import ROOT, load_profile
from models.runtime import pick_runtime
from scripts.train.toy_distill import EMBEDDING_SCALE, W_MAX, W_MIN, build_student
from tasks.distillation import DISTILL_COMPARE
from tasks.text_to_image import TEXT_TO_IMAGE

TOY = ROOT / "assets" / "toy"
QUICK = dict(prompt="a blue square", steps=3, seed=5)


def write_student(folder, perturb: float = 0.0):
    teacher = UNet2DConditionModel.from_pretrained(TOY / "sd", subfolder="unet", torch_dtype=torch.float32)
    student = build_student(teacher)
    if perturb:
        with torch.no_grad():
            torch.manual_seed(0)
            student.class_embedding.linear_2.weight.normal_(0, perturb)
    student.save_pretrained(folder / "unet")
    for part in ("scheduler", "text_encoder", "tokenizer"):
        shutil.copytree(TOY / "sd" / part, folder / part)
    (folder / "model_index.json").write_text((TOY / "sd" / "model_index.json").read_text())
    (folder / "guidance.json").write_text(json.dumps({"w_min": W_MIN, "w_max": W_MAX,
                                                       "embedding_scale": EMBEDDING_SCALE, "teacher": "sd"}))
    return folder


def profile_with(tmp_path, student_folder, name="with_student"):
    text = (ROOT / "assets" / "profiles" / "toy.toml").read_text().replace('"../toy/', f'"{TOY}/')
    text = "\n".join(line for line in text.splitlines() if not line.startswith("distilled"))  # the shipped one
    path = tmp_path / f"{name}.toml"
    path.write_text(text.replace("[meta]", f'distilled = "{student_folder}"\n\n[meta]', 1))
    return load_profile(str(path))


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    root = tmp_path_factory.mktemp("student")
    return profile_with(root, write_student(root / "distilled"))


def pixels(result) -> np.ndarray:
    return np.stack([np.asarray(image) for image, _ in result.outputs["images"]]).astype(np.int16)


def test_the_student_draws_in_one_row_per_step_with_w_in_its_embedding(profile):
    student = load_role_sd(profile, pick_runtime("cpu", "float32"), "distilled")
    with counting_rows(student.unet) as rows:
        result = TEXT_TO_IMAGE(profile, guidance="distilled", scale=7.0, **QUICK)
    assert sum(rows) == QUICK["steps"] and result.outputs["metadata"]["model_rows_per_step"] == 1.0
    # At its start the student is the teacher's conditional model: the plumbing gives exactly that image.
    conditional = TEXT_TO_IMAGE(profile, guidance="none", scale=1.0, **QUICK)
    assert np.abs(pixels(result) - pixels(conditional)).max() <= 1


def test_the_guidance_scale_reaches_the_student(tmp_path):
    """The comparison can fail: with a live w embedding, two w give two images."""
    profile = profile_with(tmp_path, write_student(tmp_path / "live", perturb=0.5), "live")
    low = TEXT_TO_IMAGE(profile, guidance="distilled", scale=1.0, **QUICK)
    high = TEXT_TO_IMAGE(profile, guidance="distilled", scale=12.0, **QUICK)
    assert np.abs(pixels(low) - pixels(high)).max() > 5


@pytest.mark.parametrize("request_,message", [
    (dict(guidance="distilled", scale=20.0), r"trained on w in \[1, 12\]"),
    (dict(guidance="distilled", scale=0.5), r"trained on w in \[1, 12\]"),
    (dict(guidance="distilled", scale=4.0, model="sd_t5"), "distilled from model sd"),
    (dict(guidance="distilled", scale=4.0, interval_start=0.2), "guides inside its one call"),
])
def test_what_the_student_cannot_do_is_refused(profile, request_, message):
    with pytest.raises(ValueError, match=message):
        TEXT_TO_IMAGE.spec.bind(profile).parse({**QUICK, **request_})


def test_a_profile_without_the_role_says_how_to_add_it(tmp_path):
    text = (ROOT / "assets" / "profiles" / "toy.toml").read_text().replace('"../toy/', f'"{TOY}/')
    text = "\n".join(line for line in text.splitlines() if not line.startswith("distilled"))
    path = tmp_path / "without.toml"
    path.write_text(text)
    without = load_profile(str(path))
    assert "distilled" not in TEXT_TO_IMAGE.spec.bind(without).field("guidance").choices  # not offered
    with pytest.raises(ModelUnavailable, match="names no 'distilled' model.*profile TOML"):  # like any tab
        DISTILL_COMPARE(without, scales="2", **QUICK)
    with pytest.raises(ValueError, match="distilled"):  # and an API call naming it is refused
        TEXT_TO_IMAGE.spec.bind(without).parse({**QUICK, "guidance": "distilled", "scale": 4.0})


def test_distill_compare_counts_half_the_rows_for_the_student(profile):
    result = DISTILL_COMPARE(profile, scales="2, 7", steps=3, seed=1)
    meta = result.outputs["metadata"]
    assert meta["teacher_cfg"]["model_rows_per_image_and_step"] == 2.0
    assert meta["student"]["model_rows_per_image_and_step"] == 1.0
    assert meta["student_over_teacher"]["model_rows"] == 0.5
    assert result.outputs["grid"].size[0] > 2 * 32
