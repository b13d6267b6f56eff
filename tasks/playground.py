"""``/playground``: the 2D Gaussian mixture with exact scores through the one loop (CPU, no models)."""

from __future__ import annotations

from guidance.rules import METHODS, RULE_PARAMS, SCALE, rule_from
from models.architectures.gmm2d import default_mixture
from models.architectures.guided_student_2d import check_guidance_scale
from pipelines.playground import GUIDANCE_MODES, MAX_SAMPLES, MAX_STEPS, SAMPLERS, run_playground
from reporting.playground import plot_playground
from tasks import fields as F
from tasks.common import guidance_fields
from tasks.spec import EndpointSpec, Output, Params, Task, TaskContext


def check_playground(params: Params, profile) -> None:
    """The rule as a whole (a method's own scale range, the interval), and CFG++'s DDIM step: before sampling."""
    if params.guidance == "distilled":  # the shipped 2D student was trained on w in [0, 12]
        check_guidance_scale(params.scale)
        return
    if params.guidance not in METHODS:
        return  # exact classifier guidance takes the scale alone
    rule = rule_from(params)
    if rule.needs_ddim and params.sampler != "ddim":
        raise ValueError(f"{rule.name} rewrites the DDIM step: set sampler to ddim (got {params.sampler})")


PLAYGROUND_SPEC = EndpointSpec(
    api_name="/playground",
    summary="Exact 2D mixture scores: any rule or exact classifier guidance, samples over the sharpened target",
    fields=(
        F.choice("guidance", "cfg", GUIDANCE_MODES, "guidance",
                 info="How the 2D samples are steered: a method of the registry on the exact scores, distilled (a "
                      "one-call 2D student) or classifier (exact classifier guidance); none samples p(x | c)."),
        *(F.replace_label(f, "scale (w, or s for the classifier)") if f.name == SCALE.name else f
          for f in guidance_fields(scale_default=3.0, with_rule=False, lacks=("attention", "pixels"))),
        F.choice("target_class", "red", default_mixture().class_names, "target class", widget="dropdown"),
        F.choice("sampler", "ddpm", SAMPLERS, "sampler"),
        F.integer("steps", 200, 1, MAX_STEPS, "steps", quick=5),
        F.integer("num_samples", 1000, 1, MAX_SAMPLES, "samples", quick=100),
        F.seed(),
    ),
    outputs=(
        Output("plot", "image", "samples over p(x) p(c|x)^w", elem_id="pg-plot"),
        Output("stats", "json", "statistics"),
    ),
    checks=(check_playground,),
)


def run_playground_task(params: Params, ctx: TaskContext) -> dict:
    options = {k: params[k] for k in RULE_PARAMS if k in params and k != SCALE.name}
    with ctx.section("sample"):
        run = run_playground(params.guidance, params.scale, target_class=params.target_class, sampler=params.sampler,
                             steps=params.steps, num_samples=params.num_samples, seed=params.seed,
                             callback=ctx.steps(), **options)
    stats = {**run.stats, "seed": params.seed, "guidance": params.guidance, "scale": params.scale,
             "reproduce": ctx.snippet()}
    return dict(plot=plot_playground(run, params.guidance, params.scale), stats=stats)


PLAYGROUND = Task(PLAYGROUND_SPEC, run_playground_task)
