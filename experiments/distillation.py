"""A distilled student beside its CFG teacher: the same prompt, seed and scales, and what each image cost.

The teacher guides with CFG (two UNet rows per image and step: the empty prompt and the prompt); the student
(``scripts/train/toy_distill.py``, Meng et al. 2023 stage one) takes w through its timestep embedding and predicts
the guided output in one row. Rows are counted by a forward hook on each UNet (what ran, not what was planned), and
each run is timed on its own, teacher and student interleaved per w so both see the same machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor

from guidance.rules import GuidanceRule
from guidance.settings import SamplingSettings
from models.loading.sd import SDComponents
from pipelines.text_to_image import text_to_image


@dataclass
class RunCost:
    """One run's cost per image: seconds, and UNet rows per step as counted."""

    seconds: float
    rows: int
    images: int
    steps: int

    @property
    def rows_per_step(self) -> float:
        return self.rows / (self.images * self.steps)

    def as_dict(self) -> dict[str, float]:
        return {"seconds_per_image": round(self.seconds / self.images, 4),
                "model_rows_per_image_and_step": round(self.rows_per_step, 3)}


@dataclass
class Comparison:
    scales: list[float]
    teacher: list[Tensor] = field(default_factory=list)  # per w, [B, 3, H, W] in [0, 1]
    student: list[Tensor] = field(default_factory=list)
    teacher_costs: list[RunCost] = field(default_factory=list)
    student_costs: list[RunCost] = field(default_factory=list)

    def summary(self) -> dict:
        def mean(costs: list[RunCost], key: str) -> float:
            return sum(c.as_dict()[key] for c in costs) / len(costs)

        teacher_s, student_s = mean(self.teacher_costs, "seconds_per_image"), mean(self.student_costs,
                                                                                  "seconds_per_image")
        teacher_rows = mean(self.teacher_costs, "model_rows_per_image_and_step")
        student_rows = mean(self.student_costs, "model_rows_per_image_and_step")
        return {
            "per_scale": [{"scale": w, "teacher_cfg": t.as_dict(), "student": s.as_dict()}
                          for w, t, s in zip(self.scales, self.teacher_costs, self.student_costs, strict=True)],
            "teacher_cfg": {"seconds_per_image": round(teacher_s, 4), "model_rows_per_image_and_step": teacher_rows},
            "student": {"seconds_per_image": round(student_s, 4), "model_rows_per_image_and_step": student_rows},
            "student_over_teacher": {"seconds": round(student_s / teacher_s, 3),
                                     "model_rows": round(student_rows / teacher_rows, 3)},
        }


@contextmanager
def counting_rows(unet: torch.nn.Module) -> Iterator[list[int]]:
    """The batch rows of every forward call of ``unet`` inside the block."""
    counted: list[int] = []
    hook = unet.register_forward_pre_hook(lambda module, args, kwargs: counted.append(int(args[0].shape[0])),
                                          with_kwargs=True)
    try:
        yield counted
    finally:
        hook.remove()


def timed_run(sd: SDComponents, run: Callable[[], Tensor], images: int, steps: int) -> tuple[Tensor, RunCost]:
    with counting_rows(sd.unet) as counted:
        started = time.perf_counter()
        out = run()
        seconds = time.perf_counter() - started
    return out, RunCost(seconds, sum(counted), images, steps)


@torch.no_grad()
def teacher_and_student(teacher: SDComponents, student: SDComponents, prompt: str, scales: list[float],
                        settings: SamplingSettings, scale_of_w: float, negative_prompt: str = "") -> Comparison:
    """Teacher CFG and the student at each w, the same seed and settings; the student gets w × ``scale_of_w``."""
    result = Comparison(list(scales))
    n = settings.num_images
    for w in scales:
        images, cost = timed_run(teacher, lambda w=w: text_to_image(
            teacher, prompt, negative_prompt=negative_prompt, rule=GuidanceRule("cfg", w), settings=settings).images,
            n, settings.steps)
        result.teacher.append(images)
        result.teacher_costs.append(cost)
        labels = torch.full((n,), w * scale_of_w, device=student.device)
        images, cost = timed_run(student, lambda w=w, labels=labels: text_to_image(
            student, prompt, negative_prompt=negative_prompt, rule=GuidanceRule("distilled", w), settings=settings,
            class_labels=labels).images, n, settings.steps)
        result.student.append(images)
        result.student_costs.append(cost)
    return result
