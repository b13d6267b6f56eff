"""``/classifier_guidance``: ImageNet ADM + noise-aware classifier in ``full``; the toy UNet + world classifiers in
a profile with a ``classifier_noise_aware`` role. Same endpoint, same parameters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from PIL import Image

from condition.labels import class_id_in, display_name, display_names, resolve_class
from models.loading.adm import CHOICES, ModelChoice, load_adm_pair, role_spec
from models.loading.sd import sd_native_size
from models.loading.toy_classifier import class_names_in
from models.profiles import Profile
from pipelines.classifier_guidance import SAMPLERS, classifier_guided_sample, parse_steps
from pipelines.toy_guidance import load_toy_guided
from reporting.plots import log_prob_frames
from tasks import fields as F
from tasks.common import images_field
from tasks.spec import EndpointSpec, Output, Params, Task, TaskContext

MAX_SCALE = 20.0
DEFAULT_CLASS = 207  # golden retriever: a class every ImageNet model knows well
TOY_ROLE = "classifier_noise_aware"
TOY_CHOICES = {"toy": ModelChoice("", "", 10.0, "toy 32×32 UNet (empty prompt) + noise-aware world classifier")}
# A respaced step costs one UNet call plus a classifier forward and backward pass (measured ≈ 1:1 on the golden
# pair, scripts/bench/classifier_guidance.py); compare_clean runs the whole thing twice.
CLASSIFIER_COST = 1.0
# ADM works in pixel space: one forward at 64² / 256² costs about what SD 1.5 spends on this many megapixels of
# output (an estimate from the parameter counts and feature-map sizes; scripts/tools/gpu_check.py measures it on a GPU).
ADM_MEGAPIXEL_EQUIVALENT = {64: 0.13, 256: 0.52}


def uses_world_classes(profile: Profile) -> bool:
    """A profile that ships world classifiers guides its own UNet; otherwise ImageNet ADM."""
    return profile.has(TOY_ROLE)


def model_choices(profile: Profile) -> dict[str, ModelChoice]:
    return TOY_CHOICES if uses_world_classes(profile) else CHOICES


def class_names(profile: Profile) -> tuple[str, ...]:
    return class_names_in(profile.source(TOY_ROLE)) if uses_world_classes(profile) else display_names()


def _default_class(profile: Profile) -> str:
    return class_names(profile)[0] if uses_world_classes(profile) else display_name(DEFAULT_CLASS)


def _steps(value: Any, field: F.Field) -> str:
    # The format only: how many steps it keeps depends on the model, checked in resolve() below.
    return parse_steps(value)[0]


def resolve(params: Params, profile: Profile) -> Mapping[str, Any]:
    """The class id (the name when class_id is −1), the respacing against the model, the image size against the cap."""
    toy = uses_world_classes(profile)
    names = class_names(profile)
    target = class_id_in(params.class_name, params.class_id, names) if toy else resolve_class(params.class_name,
                                                                                                params.class_id)
    spec = None if toy else role_spec(profile, "adm_diffusion", params.model)
    limits = profile.limits
    respacing, kept = parse_steps(params.steps, int(spec.flags.get("diffusion_steps", 1000)) if spec else 1000,
                                  limits.guided_steps)
    size = int(spec.flags["image_size"]) if spec else (sd_native_size(profile.source("sd")) or 0)
    if size * size > limits.max_pixels:
        raise ValueError(f"the {params.model} model makes {size}×{size} images; this server allows "
                         f"{limits.max_pixels} pixels per image")
    label = names[target] if toy else display_name(target)
    return dict(class_name=label, class_id=target, steps=respacing, kept_steps=kept, image_size=size)


def cost(params: Params) -> float:
    runs = 2 if params.compare_clean else 1
    per_image = ADM_MEGAPIXEL_EQUIVALENT.get(params.image_size, params.image_size**2 / 1e6)
    return params.kept_steps * per_image * params.num_images * (1 + CLASSIFIER_COST) * runs


CLASSIFIER_GUIDANCE_SPEC = EndpointSpec(
    api_name="/classifier_guidance",
    summary="Classifier guidance by a noise-aware classifier, log p(y | x_t) over the steps, a clean-classifier "
            "comparison",
    fields=(
        F.text("class_name", _default_class,
               lambda p: "class (colour, shape)" if uses_world_classes(p) else "ImageNet class (type to search)",
               widget="dropdown", choices=class_names),
        F.integer("class_id", -1, -1, lambda p: len(class_names(p)) - 1,
                  lambda p: f"or class id 0–{len(class_names(p)) - 1} (−1 = use the name)", widget="number",
                  optional=True),
        F.choice("model", lambda p: next(iter(model_choices(p))), lambda p: tuple(model_choices(p)), "model",
                 info=lambda p: " · ".join(f"{k}: {v.description}" for k, v in model_choices(p).items())),
        F.number("classifier_scale", lambda p: next(iter(model_choices(p).values())).default_scale, 0.0, MAX_SCALE,
                 "classifier scale s", step=0.1),
        F.Field("steps", "custom", lambda p: f"ddim{min(25, p.limits.guided_steps)}",
                'steps (respacing: "250", "100", "ddim25", "50" …)', parser=_steps, quick="ddim2",
                info="ADM's timestep respacing: \"ddim25\" is 25 DDIM steps, a plain count such as \"250\" that "
                     "many steps of the chosen sampler (the ADM paper guides with 250), up to max_guided_steps.",
                invalid=("0", "1000000", "ddim0", "ddim1000000", "nan", "ddim-3", "bogus", ""), extra={"text": True}),
        F.choice("sampler", "ddim", SAMPLERS, "sampler"),
        F.seed(),
        images_field(),
        F.flag("compare_clean", False, lambda p: "compare with " + ("the clean world classifier" if
               uses_world_classes(p) else "a clean ResNet-50") + " guiding on x̂₀ (same seed)"),
    ),
    outputs=(
        Output("samples", "gallery", "samples (PNG, parameters embedded)", columns=4, elem_id="cg-gallery",
               preview=True),
        Output("log_prob", "lineplot", "log p(target) over the steps (hover to read)",
               y_title="log p (mean over images)"),
        Output("metadata", "json", "metadata"),
        Output("seed", "number", "seed used"),
        Output("top5", "lineplot", "the guiding classifier's final top-5 over the steps (first image)",
               y_title="log p"),
    ),
    checks=(resolve,),
    cost=cost,
)


def _to_pil(image) -> Image.Image:
    array = (image.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
    return Image.fromarray(array)


def run_classifier_guidance(params: Params, ctx: TaskContext) -> dict:
    profile = ctx.profile
    toy = uses_world_classes(profile)
    roles = ("sd", TOY_ROLE, "classifier_clean") if toy else ("adm_diffusion", "adm_classifier")
    with ctx.loading(*roles):
        pair = load_toy_guided(profile, ctx.runtime) if toy else load_adm_pair(profile, params.model, ctx.runtime)
    with ctx.section("sample"):
        # compare_clean uses the pair's own clean classifier, or (ImageNet) ResNet-50 on x̂₀.
        result = classifier_guided_sample(
            pair, class_id=params.class_id, classifier_scale=params.classifier_scale, steps=params.steps,
            sampler=params.sampler, seed=params.seed, num_images=params.num_images,
            compare_clean=params.compare_clean, runtime=ctx.runtime,
            callback=ctx.steps("guided by the noise-aware classifier"),
            clean_callback=ctx.steps(f"guided by the {pair.clean_label} on x̂₀"),
            max_steps=profile.limits.guided_steps,
        )
    sources = result.params["sources"]
    gallery = []
    for run in (result.guided, result.clean):
        if run is None:
            continue
        for i, image in enumerate(run.images):
            png = ctx.stamp(_to_pil(image), guide=run.guide, index=i, sources=sources)
            gallery.append((png, f"{run.guide}-guided · seed {params.seed} · #{i}"))
    title = f"{params.class_name} · s = {params.classifier_scale:g} · {params.sampler} {params.steps}"
    meta = ctx.metadata(model_id=pair.diffusion_source, classifier_id=pair.classifier_source, **result.metadata())
    target, top5 = log_prob_frames(result)
    return dict(samples=gallery, log_prob=target, metadata={**meta, "title": title}, seed=params.seed, top5=top5)


CLASSIFIER_GUIDANCE = Task(CLASSIFIER_GUIDANCE_SPEC, run_classifier_guidance)
