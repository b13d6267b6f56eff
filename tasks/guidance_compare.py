"""``/cg_vs_cfg``: one class, one seed, classifier guidance and CFG side by side, read by the same classifier.

Toy: the toy UNet's empty-prompt branch guided by the noise-aware world classifier vs the toy DiT with CFG. Full:
ADM 256×256 (unconditional) + its noise-aware classifier vs DiT-XL/2 256 with CFG, both on ImageNet.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from experiments.guidance_compare import compare, cost_table, log_prob_frame
from models.adapters.adm_schedule import space_timesteps
from models.loading.adm import load_adm_pair, role_spec
from models.loading.dit import ROLE as DIT_ROLE
from models.loading.dit import load_dit
from models.profiles import Profile
from pipelines.text_to_image import to_pil
from pipelines.toy_guidance import load_toy_guided
from tasks import class_cfg as dit_task
from tasks import fields as F
from tasks.classifier_guidance import TOY_ROLE, uses_world_classes
from tasks.spec import EndpointSpec, Output, Params, Task, TaskContext

ADM_CHOICE = "256x256-uncond"  # the ADM pair at DiT-XL/2's resolution
MAX_STEPS = 100


def _roles(profile: Profile) -> tuple[str, ...]:
    guided = ("sd", TOY_ROLE, "classifier_clean") if uses_world_classes(profile) else ("adm_diffusion",
                                                                                        "adm_classifier")
    return (*guided, DIT_ROLE)


def resolve(params: Params, profile: Profile) -> Mapping[str, Any]:
    """The class (by the DiT's names, which must be the classifier's) and the pixel cap, as ``/class_cfg`` does."""
    resolved = dict(dit_task.resolve(params.replace(scheduler="ddim", clip_sample="off"), profile))
    if not uses_world_classes(profile):
        flags = role_spec(profile, "adm_diffusion", ADM_CHOICE).flags
        size = int(flags["image_size"])
        if size * size > profile.limits.max_pixels:
            raise ValueError(f"the ADM model of the comparison makes {size}×{size} images; this server allows "
                             f"{profile.limits.max_pixels} pixels per image")
        check_adm_ddim_steps(params.steps, int(flags.get("diffusion_steps", 1000)))
    return resolved


def check_adm_ddim_steps(steps: int, diffusion_steps: int) -> None:
    """ADM's DDIM respacing keeps ``range(0, T, k)``: only counts that some stride k gives exactly are possible."""
    def possible(n: int) -> bool:
        try:
            space_timesteps(diffusion_steps, f"ddim{n}")
        except ValueError:
            return False
        return True

    if not possible(steps):
        near = sorted((n for n in range(1, MAX_STEPS + 1) if possible(n)), key=lambda n: abs(n - steps))[:2]
        raise ValueError(f"ADM's DDIM respacing cannot take exactly {steps} evenly strided steps from its "
                         f"{diffusion_steps}; try steps = {' or '.join(str(n) for n in sorted(near))}")


def cost(params: Params) -> float:
    dit = dit_task.DIT_MEGAPIXEL_EQUIVALENT if params.image_size >= 256 else params.image_size**2 / 1e6
    # CFG (2 rows) + an unguided DiT run (1 row) + classifier guidance (≈ 2 rows' worth: model + classifier pass)
    return params.steps * params.num_images * dit * 5


CG_VS_CFG_SPEC = EndpointSpec(
    api_name="/cg_vs_cfg",
    summary="Classifier guidance vs CFG on the same class and seed: samples, log p(y | ·) of the noise-aware "
            "classifier over the steps for both, and the measured cost per step",
    fields=(
        *(f for f in dit_task.CLASS_CFG_SPEC.fields if f.name in ("class_name", "class_id")),
        F.number("classifier_scale", 10.0, 0.0, 20.0, "classifier scale s (classifier guidance)", step=0.1),
        F.number("cfg_scale", 4.0, 0.0, 20.0, "CFG scale w (DiT)", step=0.1),
        F.integer("steps", lambda p: min(25, p.limits.max_steps), 1, lambda p: min(MAX_STEPS, p.limits.max_steps),
                  "DDIM steps (both)", quick=2),
        F.seed(),
        F.integer("num_images", 2, 1, lambda p: p.limits.max_images, "images per method", quick=1),
    ),
    outputs=(
        Output("samples", "gallery", "classifier-guided (first row) and CFG samples", columns=4,
               elem_id="cmp-gallery"),
        Output("plot", "lineplot", "the same classifier's log p(y | ·) over the steps, both methods (hover to read)",
               elem_id="cmp-plot", y_title="log p(y | ·)"),
        Output("table", "markdown", "cost per step"),
        Output("metadata", "json", "metadata"),
    ),
    checks=(resolve,),
    cost=cost,
)


def run_cg_vs_cfg(params: Params, ctx: TaskContext) -> dict:
    profile = ctx.profile
    toy = uses_world_classes(profile)
    with ctx.loading(*_roles(profile)):
        pair = load_toy_guided(profile, ctx.runtime) if toy else load_adm_pair(profile, ADM_CHOICE, ctx.runtime)
        dit = load_dit(profile, ctx.runtime)
    if dit.class_names is not None and tuple(dit.class_names) != tuple(pair.class_names) and toy:
        raise ValueError("the DiT's id2label and the classifier's classes.json name different classes; the two "
                         "methods must share one label set")
    if dit.num_classes != len(pair.class_names):
        raise ValueError(f"the DiT has {dit.num_classes} classes and the classifier {len(pair.class_names)}: the "
                         "comparison needs one label set")
    total = 2 * params.steps
    done = iter(range(1, 10 * total))
    with ctx.section("sample"):
        result = compare(pair, dit, class_id=params.class_id, classifier_scale=params.classifier_scale,
                         cfg_scale=params.cfg_scale, steps=params.steps, seed=params.seed,
                         num_images=params.num_images, same_space=toy and dit.vae is None,
                         on_step=lambda method, state: ctx.report(min(next(done), total), total, method))
    gallery = [(ctx.stamp(to_pil(img), method="classifier guidance", index=i), f"classifier guidance · #{i}")
               for i, img in enumerate(result.cg.images)]
    gallery += [(ctx.stamp(to_pil(img), method="cfg", index=i), f"CFG · #{i}") for i, img in
                enumerate(result.cfg_images)]
    costs = [{"method": c.method, "model_rows_per_step": c.model_rows, "classifier_forwards_per_step":
              c.classifier_forwards, "backward_passes_per_step": c.backward_passes, "seconds_per_step":
              round(c.seconds_per_step, 5), "unguided_seconds_per_step": round(c.unguided_seconds_per_step, 5),
              "ratio_to_unguided": round(c.ratio, 3)} for c in result.costs]
    meta = ctx.metadata(
        model_id=profile.display_source(DIT_ROLE),
        classifier_id=profile.display_source(TOY_ROLE if toy else "adm_classifier"), yardstick=result.yardstick,
        costs=costs,
        final_log_p={"classifier guidance": [round(float(v), 4) for v in result.cg_log_prob[-1]],
                     "cfg": [round(float(v), 4) for v in result.cfg_log_prob[-1]]},
    )
    table = (f"Read by the noise-aware classifier on **{result.yardstick}** (both runs, {params.steps} DDIM steps, "
             f"{ctx.runtime.name}).\n\n" + cost_table(result.costs))
    return dict(samples=gallery, plot=log_prob_frame(result), table=table, metadata=meta)


CG_VS_CFG = Task(CG_VS_CFG_SPEC, run_cg_vs_cfg)
