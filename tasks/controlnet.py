"""``/controlnet``, ``/controlnet_multi`` and ``/zero_conv``: control maps steering SD through the one loop, and the
measured "why zero convolutions" facts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from condition.control import canny_map, check_thresholds
from condition.images import sanitize_image
from experiments.zero_conv import zero_conv_analysis
from guidance.rules import rule_from
from models.loading.annotators import MAX_RESOLUTION, MIN_RESOLUTION, NO_PERSON, depth_map, pose_map
from models.loading.controlnet import CONTROL_ROLES, controlnet_for
from models.loading.sd import load_role_sd
from models.profiles import Profile
from pipelines.controlnet import MAX_CONDITIONING_SCALE, ControlSpec, controlnet_to_image, validate_control
from pipelines.text_to_image import to_pil
from reporting.plots import diagnostics_frames
from tasks import fields as F
from tasks.common import (
    DIAGNOSTICS_OUTPUT,
    PHOTOS,
    SATURATION_OUTPUT,
    check_guidance,
    check_pixels,
    check_sampler,
    guidance_fields,
    guidance_roles,
    is_toy,
    load_weak,
    preview_for,
    prompt_fields,
    sampling_fields,
    sampling_settings,
    sd_cost,
    toy_example,
    with_preview,
)
from tasks.spec import EndpointSpec, Output, Params, Task, TaskContext

CONTROLS = tuple(CONTROL_ROLES)


def available_controls(profile: Profile) -> list[str]:
    return [c for c in CONTROLS if profile.has(CONTROL_ROLES[c])]


def _default_image(profile: Profile) -> str:
    # The toy models only know the shapes world: their default input is a world scene, recoloured by the prompt.
    return toy_example("two_shapes") if is_toy(profile) else str(PHOTOS / "astronaut.png")


def _default_prompt(profile: Profile) -> str:
    return "a blue cross and a yellow square" if is_toy(profile) else "a photo of an astronaut"


def map_fields() -> tuple[F.Field, ...]:
    """How an upload becomes a control map (shared by both ControlNet endpoints)."""
    return (
        F.flag("preprocess", True, "preprocess (off = the image already is the map)"),
        F.number("low_threshold", 100, 0, 255, "Canny low threshold", step=1),
        F.number("high_threshold", 200, 0, 255, "Canny high threshold", step=1),
        F.integer("preprocess_resolution", 512, MIN_RESOLUTION, MAX_RESOLUTION, "preprocess resolution (depth, pose)",
                  step=64, quick=64),
    )


def schedule_fields(suffix: str = "", label: str = "") -> tuple[F.Field, ...]:
    """One ControlNet's strength and the fraction of the schedule where it acts."""
    return (
        F.number(f"conditioning_scale{suffix}", 1.0, 0.0, MAX_CONDITIONING_SCALE, f"{label}conditioning scale"),
        F.number(f"guidance_start{suffix}", 0.0, 0.0, 1.0, f"{label}guidance start"),
        F.number(f"guidance_end{suffix}", 1.0, 0.0, 1.0, f"{label}guidance end"),
    )


def check_maps(params: Params, profile: Profile) -> Mapping[str, Any]:
    """Thresholds in order, each net's range in order, every asked ControlNet in the profile, uploads decoded."""
    check_thresholds(params.low_threshold, params.high_threshold)
    suffixes = ("_a", "_b") if "control_a" in params else ("",)
    for suffix in suffixes:
        validate_control(params[f"conditioning_scale{suffix}"], params[f"guidance_start{suffix}"],
                         params[f"guidance_end{suffix}"])
        control = params[f"control{suffix}"]
        if not profile.has(CONTROL_ROLES[control]):
            controlnet_for(profile, control)  # raises the explanation before any upload or model work
    cap = profile.limits.max_upload_pixels
    decoded = {"image": sanitize_image(params.image, max_pixels=cap)}
    if params.get("image_b") is not None:
        decoded["image_b"] = sanitize_image(params.image_b, max_pixels=cap, name="image_b")
    return decoded


def control_map(ctx: TaskContext, params: Params, image, control: str) -> tuple[Any, str]:
    """The map the ControlNet reads, and a note for the user (pose: nobody found)."""
    if not params.preprocess:
        return image, ""
    if control == "canny":
        return canny_map(image, *check_thresholds(params.low_threshold, params.high_threshold)), ""
    if control == "depth":
        return depth_map(image, ctx.profile.source("annotators"), params.preprocess_resolution, ctx.runtime), ""
    pose, people = pose_map(image, ctx.profile.source("annotators"), params.preprocess_resolution,
                            params.get("pose_hands", False), params.get("pose_face", False), ctx.runtime)
    return pose, (NO_PERSON if people == 0 else "")


def generate(params: Params, ctx: TaskContext, controls: list[tuple[str, Any, float, float, float]]) -> dict:
    """Load, sample with every (control, map, scale, start, end), and package images, plot and metadata."""
    profile = ctx.profile
    roles = ("sd", *(CONTROL_ROLES[c] for c, *_ in controls), *guidance_roles(params, profile))
    with ctx.loading(*with_preview(profile, *roles)):
        sd = load_role_sd(profile, ctx.runtime, "sd")
        decoder = preview_for(ctx, sd)
        weak = load_weak(params, ctx)
        specs = [ControlSpec(controlnet_for(profile, c, ctx.runtime), m, s, a, b) for c, m, s, a, b in controls]
    rule = rule_from(params)
    with ctx.section("sample"):
        out = controlnet_to_image(sd, specs, params.prompt, negative_prompt=params.negative_prompt, rule=rule,
                                  settings=sampling_settings(params, ctx, preview=decoder), weak=weak)
    models = {"sd": profile.display_source("sd"),
              **{CONTROL_ROLES[c]: profile.display_source(CONTROL_ROLES[c]) for c, *_ in controls}}
    steps_on = [sum(step[i] for step in out.active) for i in range(len(specs))]
    gallery = [(ctx.stamp(to_pil(img), models=models, index=i), f"seed {params.seed} · #{i}")
               for i, img in enumerate(out.images)]
    guidance_frame, saturation_frame = diagnostics_frames(out.result, decoder.caption)
    meta = ctx.metadata(model_id=models["sd"], models=models, rule=rule.describe(), controlnet_steps_on=steps_on,
                        diagnostics_measured_on=decoder.caption)
    return dict(images=gallery, diagnostics=guidance_frame, metadata=meta, saturation=saturation_frame)


CONTROLNET_SPEC = EndpointSpec(
    api_name="/controlnet",
    summary="Canny / depth / pose map (or a map you supply) steering SD, with scale and schedule range",
    fields=(
        F.image("image", _default_image, "image (or a ready-made map)"),
        F.choice("control", lambda p: (available_controls(p) or ["canny"])[0], CONTROLS, "control"),
        *map_fields(),
        *prompt_fields(_default_prompt),
        *guidance_fields(),
        *schedule_fields(),
        *sampling_fields("sd"),
        F.flag("pose_hands", False, "pose: hands"),
        F.flag("pose_face", False, "pose: face"),
    ),
    outputs=(
        Output("control_map", "image", "control map (what the ControlNet reads)"),
        Output("images", "gallery", "images (PNG, parameters embedded)", elem_id="cn-gallery", preview=True),
        DIAGNOSTICS_OUTPUT,
        Output("metadata", "json", "metadata"),
        SATURATION_OUTPUT,
    ),
    checks=(check_pixels, check_maps, check_sampler, check_guidance),
    cost=lambda p: sd_cost(p) * 1.4,  # SD 1.5's ControlNet is 40 % of a UNet's parameters, run on both branches
)


def run_controlnet(params: Params, ctx: TaskContext) -> dict:
    cmap, note = control_map(ctx, params, params.image, params.control)
    if note:
        ctx.note(note)
    out = generate(params, ctx, [(params.control, cmap, params.conditioning_scale, params.guidance_start,
                                  params.guidance_end)])
    return dict(control_map=ctx.stamp(cmap), **out)


CONTROLNET = Task(CONTROLNET_SPEC, run_controlnet)

CONTROLNET_MULTI_SPEC = EndpointSpec(
    api_name="/controlnet_multi",
    summary="Two ControlNets at once, each with its own map, scale and schedule range",
    fields=(
        F.image("image", _default_image, "image (or a ready-made map)"),
        F.image("image_b", None, "second image (empty = the same image)", optional=True),
        F.choice("control_a", "canny", CONTROLS, "ControlNet A"),
        F.choice("control_b", "depth", CONTROLS, "ControlNet B", quick="canny"),  # canny needs no annotator
        *map_fields(),
        *prompt_fields(_default_prompt),
        *guidance_fields(),
        *schedule_fields("_a", "A: "),
        *schedule_fields("_b", "B: "),
        *sampling_fields("sd"),
    ),
    outputs=(
        Output("control_maps", "gallery", "control maps"),
        Output("images", "gallery", "images (PNG, parameters embedded)", preview=True),
        DIAGNOSTICS_OUTPUT,
        Output("metadata", "json", "metadata"),
        SATURATION_OUTPUT,
    ),
    checks=(check_pixels, check_maps, check_sampler, check_guidance),
    cost=lambda p: sd_cost(p) * 1.8,
)


def run_controlnet_multi(params: Params, ctx: TaskContext) -> dict:
    controls = []
    for suffix, image in (("_a", params.image), ("_b", params.image if params.image_b is None else params.image_b)):
        control = params[f"control{suffix}"]
        cmap, note = control_map(ctx, params, image, control)
        if note:
            ctx.note(note)
        controls.append((control, cmap, params[f"conditioning_scale{suffix}"], params[f"guidance_start{suffix}"],
                         params[f"guidance_end{suffix}"]))
    out = generate(params, ctx, controls)
    return dict(control_maps=[(ctx.stamp(m), c) for c, m, *_ in controls], **out)


CONTROLNET_MULTI = Task(CONTROLNET_MULTI_SPEC, run_controlnet_multi)

ZERO_CONV_SPEC = EndpointSpec(
    api_name="/zero_conv",
    summary="Why zero convolutions: exact zero residual at init yet non-zero gradients, measured on a fresh "
            "ControlNetModel.from_unet",
    fields=(F.seed(), F.integer("latent_size", 8, 2, 32, "latent size", quick=2)),
    outputs=(Output("measured", "json", "measured"), Output("table", "markdown", "measured")),
    cost=lambda p: 1.0,
)


def zero_conv_summary(r: dict) -> str:
    """The measured numbers as a short Markdown table."""
    rows = [
        ("zero convolutions checked", f"{r['zero_convs']}"),
        ("largest residual at init", f"{r['max_abs_residual']:g}"),
        ("UNet output change at init", f"{r['max_abs_output_change']:g} (bit identical: {r['bit_identical']})"),
        ("smallest zero-conv weight-gradient norm", f"{r['min_weight_grad_norm']:.3e}"),
        ("weight gradient vs Σ g ⊗ x (relative error)", f"{r['weight_grad_rel_error']:.1e}"),
        ("bias gradient vs Σ g (relative error)", f"{r['bias_grad_rel_error']:.1e}"),
        ("gradient reaching the copy, step 1", f"{r['trunk_grad_max_abs']:g}"),
        ("gradient reaching the copy, after one step", f"{r['trunk_grad_norm_after_one_step']:.3e}"),
        ("seconds", f"{r['seconds']:.2f}"),
    ]
    return "| measured | value |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)


def run_zero_conv(params: Params, ctx: TaskContext) -> dict:
    with ctx.section("measure"):
        report = zero_conv_analysis(downsample=8, latent_size=params.latent_size, seed=params.seed).as_dict()
    return dict(measured={**report, "reproduce": ctx.snippet()}, table=zero_conv_summary(report))


ZERO_CONV = Task(ZERO_CONV_SPEC, run_zero_conv)
