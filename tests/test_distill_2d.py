"""Guidance distillation in the 2D world: the SHIPPED student (``assets/toy/distill_2d/``) against exact CFG and the
teacher network's CFG (Meng et al. 2023, stage one).

The issue's target — the student's energy distance to exact guided samples within 2× the teacher network's at every
tested w — is checked twice: in the shipped report (``assets/toy/distill_2d.json``: 3 classes, 2000 samples, 200
steps, distance to 10 000 exact samples from other noise), and re-measured here at a small size (one class, 1000
samples, 50 steps) as the distance to the exact-CFG samples from the same noise, which a small sample can resolve.
Margins are stated at each assert against the measured values.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from experiments.distill_2d import (
    SCALES,
    CallCounter,
    exact_eps_rows,
    run_method,
    training_alpha_bars,
)
from guidance.sampler import ModelCall
from models.architectures.gmm2d import default_mixture
from models.architectures.guided_student_2d import (
    DISTILL_DIR,
    STUDENT_WEIGHTS,
    TEACHER_WEIGHTS,
    DistillRecord,
    GuidedStudentDenoiser,
    load_student,
    load_teacher_net,
)
from models.architectures.score_mlp import LearnedScoreDenoiser
from models.profiles import ROOT
from pipelines.playground import run_playground

REPORT = ROOT / "assets" / "toy" / "distill_2d.json"
SMALL = dict(target_class="red", sampler="ddpm", steps=50, num_samples=1000, seed=0)


@pytest.fixture(scope="module")
def student():
    return load_student()


@pytest.fixture(scope="module")
def teacher():
    return load_teacher_net()


def test_the_loaded_networks_are_the_shipped_files(student, teacher):
    record = DistillRecord.read()
    assert student.config == record.student and teacher.config == record.teacher
    for name, net in ((STUDENT_WEIGHTS, student), (TEACHER_WEIGHTS, teacher)):
        path = DISTILL_DIR / name
        assert path.stat().st_size < 300_000, path  # small: ~180 kB and ~230 kB
        stored, state = load_file(str(path)), net.state_dict()
        assert stored.keys() == state.keys() and all(torch.equal(stored[k], state[k]) for k in stored), path


def test_the_student_takes_one_model_call_per_step_and_cfg_two(student, teacher):
    steps, samples = 25, 64
    label = default_mixture().class_index("red")
    one = CallCounter(GuidedStudentDenoiser(student, label, 4.0))
    run_playground("none", 4.0, steps=steps, num_samples=samples, seed=1, denoiser=one)
    assert one.forward_passes == steps and one.rows == steps * samples  # one evaluation per sample and step
    two = CallCounter(LearnedScoreDenoiser(teacher, label))
    run_playground("cfg", 4.0, steps=steps, num_samples=samples, seed=1, denoiser=two)
    assert two.forward_passes == steps and two.rows == 2 * steps * samples  # CFG: both branches, twice the rows
    with pytest.raises(ValueError, match="rule 'none'"):  # asked for CFG's two branches, the student refuses
        run_playground("cfg", 4.0, steps=2, num_samples=4, denoiser=GuidedStudentDenoiser(student, label, 4.0))


@torch.no_grad()
def test_the_student_at_w1_is_the_conditional_exact_eps(student):
    """At w = 1, ε_u + w (ε_c − ε_u) = ε_c: the student must give the exact conditional ε, on forward-process draws."""
    mixture, alpha_bars = default_mixture(), training_alpha_bars()
    generator = torch.Generator().manual_seed(7)
    x0, labels = mixture.sample_labelled(5000, generator)
    t = torch.randint(0, 1000, (5000,), generator=generator)
    a = alpha_bars[t]
    x_t = a.sqrt()[:, None] * x0 + (1 - a).sqrt()[:, None] * torch.randn(x0.shape, generator=generator,
                                                                         dtype=x0.dtype)
    cond = exact_eps_rows(mixture, x_t, a, labels)
    label_effect = (cond - exact_eps_rows(mixture, x_t, a)).pow(2).mean()
    error = (student(x_t, t, labels, torch.ones(5000)).double() - cond).pow(2).mean()
    # measured ≈ 1e-4 against a label effect ≈ 0.07: asserting < 5 % of it leaves a margin of ~30×
    assert error < 0.05 * label_effect, (float(error), float(label_effect))


@pytest.fixture(scope="module")
def exact_runs() -> dict[float, torch.Tensor]:
    """Exact-CFG samples at every tested w from the noise the learned methods use."""
    torch.set_num_threads(1)
    return {scale: run_playground("cfg", scale, **SMALL).samples for scale in SCALES}


def test_the_student_is_within_2x_of_the_teacher_network_at_every_w(student, teacher, exact_runs):
    """Re-measured with the paired distance (to exact CFG from the same noise): at this size the distance to an
    independent reference is mostly the finite-sample floor, which both methods share (ratios 0.7–1.7 here, 1000
    samples, run to run), while the paired one measures the models."""
    measured = {scale: {m: run_method(m, student, teacher, scale, paired_with=exact_runs[scale], **SMALL)
                        .paired_distance for m in ("teacher_net_cfg", "student")} for scale in SCALES}
    # measured at this size: student / teacher network 0.05–0.36 (largest at w = 0, where both are near zero)
    assert all(d["student"] <= 2 * d["teacher_net_cfg"] for d in measured.values()), measured


def test_the_shipped_report_is_what_was_measured():
    """The report states the target per w from its own numbers, for the shipped weights and every tested w."""
    report = json.loads(REPORT.read_text())
    assert report["scales"] == list(SCALES) and report["training"] == DistillRecord.read().training
    for row in report["rows"]:
        distances = row["energy_distance"]
        ratio = distances["student"] / distances["teacher_net_cfg"]
        assert math.isclose(row["student_over_teacher_net"], ratio, abs_tol=1e-3)
        assert row["within_2x"] == (ratio <= 2.0)
    assert report["target_holds_at_every_w"] == all(r["within_2x"] for r in report["rows"])
    assert report["target_holds_at_every_w"]  # measured: holds at every w (docs in assets/toy/distill_2d.md)
    assert report["model_evaluations_per_sample"] == {"exact_cfg": 2 * report["steps"],
                                                      "teacher_net_cfg": 2 * report["steps"],
                                                      "student": report["steps"]}


def test_the_comparison_can_fail(student, teacher, exact_runs):
    """The same student handed the wrong w (1 instead of 12) is far from the exact w = 12 samples: the 2× check
    above distinguishes a student that follows w from one that does not."""
    def paired(method: str, **options) -> float:
        return run_method(method, student, teacher, 12.0, paired_with=exact_runs[12.0], **SMALL, **options) \
            .paired_distance

    right, wrong, teacher_net = paired("student"), paired("student", student_scale=1.0), paired("teacher_net_cfg")
    # measured ≈ 0.003 (right w), ≈ 0.05 (teacher network) and ≈ 0.24 (wrong w)
    assert wrong > 2 * teacher_net and wrong > 10 * right, (wrong, teacher_net, right)


@pytest.mark.parametrize("scale", [-0.5, 12.5, 100.0, float("nan")])
def test_a_scale_outside_the_trained_range_is_refused(student, scale):
    with pytest.raises(ValueError, match=r"\[0, 12\]"):
        GuidedStudentDenoiser(student, 0, scale)


def test_the_student_refuses_a_class_it_does_not_have(student):
    with pytest.raises(ValueError, match="class index"):
        GuidedStudentDenoiser(student, 3, 1.0)
    with pytest.raises(ValueError, match="rule 'none'"):
        GuidedStudentDenoiser(student, 0, 1.0)(torch.zeros(2, 2), torch.tensor(10), ModelCall(("uncond",), 0, 1))
