"""``/distill_compare``: a distilled student beside its CFG teacher at the same seed and several w, with the cost
per image of each (``experiments.distillation``)."""

from __future__ import annotations

from PIL import Image

from experiments.distillation import teacher_and_student
from guidance.methods.distilled import METHOD as DISTILLED
from guidance.settings import SamplingSettings
from models.loading.sd import load_role_sd
from models.profiles import Profile
from pipelines.sweep import parse_scales, sweep_grid
from pipelines.text_to_image import to_pil
from tasks import fields as F
from tasks.common import check_pixels, images_field, is_toy, prompt_fields, size_fields, steps_field
from tasks.spec import EndpointSpec, Output, Params, Task, TaskContext
from tasks.text_models import student_guidance

ROLE = DISTILLED.model_role


def _default_prompt(profile: Profile) -> str:
    return "a red circle" if is_toy(profile) else "a photo of a red cat"


def check_scales(params: Params, profile: Profile) -> None:
    """Every w must lie in the range the student was trained on. A profile without the student passes here: like
    every tab whose model is missing, the run says which role to add (``require_source``)."""
    if not profile.has(ROLE):
        return
    info = student_guidance(profile, ROLE)
    low, high = float(info["w_min"]), float(info["w_max"])
    outside = [w for w in params.scales if not low <= w <= high]
    if outside:
        raise ValueError(f"the student was trained on w in [{low:g}, {high:g}]; {', '.join(f'{w:g}' for w in outside)} "
                         "lies outside")


DISTILL_COMPARE_SPEC = EndpointSpec(
    api_name="/distill_compare",
    summary="A guidance-distilled student (one model call per step, w through its timestep embedding) beside its "
            "CFG teacher (two calls) at the same seed and scales, with the measured cost per image of each",
    fields=(
        *prompt_fields(_default_prompt),
        F.Field("scales", "custom", "1, 2, 4, 7", "scales w (comma separated)",
                parser=lambda value, field: parse_scales(value),
                to_input=lambda scales: ", ".join(f"{s:g}" for s in scales), quick="2, 7",
                invalid=("", "1, x", "1, nan", "-1", "1, 2, 3, 4, 5, 6, 7, 8, 9"), extra={"text": True},
                info="the guidance scales to draw both at; each must lie in the range the student was trained on"),
        steps_field(),
        *size_fields("sd"),
        F.seed(),
        images_field(),
    ),
    outputs=(
        Output("grid", "image", "teacher CFG (first row) and the student (second row), one column per w",
               elem_id="dc-grid"),
        Output("metadata", "json", "cost per image of each, and the run's parameters"),
    ),
    checks=(check_pixels, check_scales),
    cost=lambda p: p.steps * p.width * p.height / 1e6 * p.num_images * len(p.scales) * 3,  # CFG 2 rows + student 1
)


def run_distill_compare(params: Params, ctx: TaskContext) -> dict:
    teacher_role = student_guidance(ctx.profile, ROLE).get("teacher", "sd")
    with ctx.loading(teacher_role, ROLE):
        teacher = load_role_sd(ctx.profile, ctx.runtime, teacher_role)
        student = load_role_sd(ctx.profile, ctx.runtime, ROLE)
    scale_of_w = float(student_guidance(ctx.profile, ROLE)["embedding_scale"])
    settings = SamplingSettings.from_request(params, callback=ctx.steps("teacher and student"))
    with ctx.section("sample"):
        out = teacher_and_student(teacher, student, params.prompt, params.scales, settings, scale_of_w,
                                  params.negative_prompt)
    cells = [(row, w) for row in ("teacher cfg", "student") for w in params.scales]
    tiles = [to_pil(image[0]) for image in [*out.teacher, *out.student]]
    grid: Image.Image = sweep_grid(tiles, cells)
    model_id = ctx.profile.display_source(ROLE)
    meta = ctx.metadata(model_id=model_id, teacher=ctx.profile.display_source(teacher_role), **out.summary())
    return dict(grid=ctx.stamp(grid, model_id=model_id), metadata=meta)


DISTILL_COMPARE = Task(DISTILL_COMPARE_SPEC, run_distill_compare)
