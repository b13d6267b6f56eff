"""``/image_conditioning``: image variations, IP-Adapter and cross-modal (CLIP text in an image model's slot)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from condition.images import sanitize_image
from guidance.rules import rule_from
from models.loading.image import CLIP_ROLE, IP_ADAPTER_ROLE, VARIATIONS_ROLE, load_clip, load_image_variations
from models.loading.image import load_ip_adapter as load_ipa
from models.profiles import Profile
from pipelines.image_conditioning import MAX_IMAGE_SCALE, MODES, clip_scores, cross_modal, ip_adapter, variations
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
    load_aid,
    load_weak,
    preview_for,
    sampling_fields,
    sampling_settings,
    sd_cost,
    toy_example,
    with_preview,
)
from tasks.spec import EndpointSpec, Output, Params, Task, TaskContext

MODE_ROLES = {
    "variations": (VARIATIONS_ROLE,), "cross-modal": (VARIATIONS_ROLE,), "ip-adapter": ("sd", IP_ADAPTER_ROLE),
}


def _default_mode(profile: Profile) -> str:
    return "variations" if profile.has(VARIATIONS_ROLE) or not profile.has(IP_ADAPTER_ROLE) else "ip-adapter"


def _default_image(profile: Profile) -> str:
    # The toy models only know the shapes world, so in toy the default input is a world scene.
    return toy_example("two_shapes") if is_toy(profile) else str(PHOTOS / "chelsea.png")


def check_request(params: Params, profile: Profile) -> Mapping[str, Any]:
    """The mode's models are in the profile, the upload decodes (unless only text is asked for), a mix has text."""
    missing = [r for r in MODE_ROLES[params.mode] if not profile.has(r)]
    if missing:
        raise ValueError(f"mode {params.mode!r} needs the {' and '.join(repr(r) for r in missing)} model(s), "
                         f"which the profile '{profile.name}' does not name; add them to the profile TOML")
    if params.mode == "cross-modal" and params.mix > 0 and not params.prompt.strip():
        raise ValueError("cross-modal mode with mix > 0 needs a prompt: it is the text side of the mix")
    if params.mode == "cross-modal" and params.mix > 0 and not profile.has(CLIP_ROLE):
        raise ValueError(f"cross-modal mode with mix > 0 needs the '{CLIP_ROLE}' model for the text embedding; add "
                         f"{CLIP_ROLE} = \"...\" to the profile TOML")
    text_only = params.mode == "cross-modal" and params.mix == 1.0 and params.image is None
    return {"image": None if text_only else sanitize_image(params.image, max_pixels=profile.limits.max_upload_pixels)}


IMAGE_CONDITIONING_SPEC = EndpointSpec(
    api_name="/image_conditioning",
    summary="CLIP image conditioning: variations, IP-Adapter, and text embeddings in an image model's slot",
    fields=(
        F.image("image", _default_image, "image", optional=True),
        F.choice("mode", _default_mode, MODES, "mode"),
        F.text("prompt", "", "prompt (ip-adapter / cross-modal; also scored by CLIP)", prose=True, lines=2,
               info="The text for ip-adapter (beside the image prompt) and cross-modal (its CLIP text embedding in the "
                    "image model's slot); every mode's CLIP scores also compare the output with it."),
        F.text("negative_prompt", "", "negative prompt (ip-adapter only)", prose=True,
               info="The unconditional branch's text in ip-adapter mode; the other modes guide against a zero image "
                    "embedding and ignore it."),
        F.number("image_scale", 0.6, 0.0, MAX_IMAGE_SCALE, "image scale (ip-adapter)"),
        F.number("mix", 0.5, 0.0, 1.0, "mix: 0 = image embedding, 1 = text (cross-modal)"),
        *guidance_fields(scale_default=3.0),
        *sampling_fields(VARIATIONS_ROLE),
    ),
    outputs=(
        Output("images", "gallery", "images (PNG, parameters embedded)", elem_id="img-gallery", preview=True),
        Output("clip_scores", "json", "CLIP cosine similarities"),
        DIAGNOSTICS_OUTPUT,
        Output("metadata", "json", "metadata"),
        Output("seed", "number", "seed used"),
        SATURATION_OUTPUT,
    ),
    checks=(check_pixels, check_request, check_sampler, lambda p, profile: check_guidance(p, profile, VARIATIONS_ROLE
                                                    if p.mode != "ip-adapter" else "sd")),
    cost=sd_cost,
)


def run_image_conditioning(params: Params, ctx: TaskContext) -> dict:
    profile, picture = ctx.profile, params.image
    if params.mode == "ip-adapter" and not params.prompt.strip() and params.image_scale == 0:
        ctx.note("image_scale 0 with an empty prompt: the image has no effect")
    if params.mode != "ip-adapter" and params.negative_prompt:
        ctx.note("negative_prompt is ignored here: the image model's unconditional branch is the zero embedding it "
                 "was trained with")
    rule = rule_from(params)
    common = dict(rule=rule)
    clip = None
    roles = [r for r in (CLIP_ROLE, *MODE_ROLES[params.mode]) if profile.has(r)]
    with ctx.loading(*with_preview(profile, *roles, *guidance_roles(params, profile))):
        common["weak"] = load_weak(params, ctx)
        if profile.has(CLIP_ROLE) and params.mode == "cross-modal":
            clip = load_clip(profile, ctx.runtime)  # the text side of the image: needed
        elif profile.has(CLIP_ROLE):  # only the cosine read-outs
            clip = load_aid(ctx, CLIP_ROLE, lambda: load_clip(profile, ctx.runtime), "no CLIP cosine read-outs")
        if params.mode == "ip-adapter":
            ipa = load_ipa(profile, ctx.runtime)
            model_id = f"{profile.display_source('sd')} + {profile.display_source(IP_ADAPTER_ROLE)}"
        else:
            vsd = load_image_variations(profile, ctx.runtime)
            model_id = profile.display_source(VARIATIONS_ROLE)
        decoder = preview_for(ctx, ipa.sd if params.mode == "ip-adapter" else vsd)
    common["settings"] = sampling_settings(params, ctx, preview=decoder)
    with ctx.section("sample"):
        if params.mode == "ip-adapter":
            out = ip_adapter(ipa, picture, params.prompt, image_scale=params.image_scale,
                             negative_prompt=params.negative_prompt, **common)
        elif params.mode == "cross-modal":
            out = cross_modal(vsd, clip, picture, params.prompt, params.mix, **common)
        else:
            out = variations(vsd, picture, **common)
    for dropped in filter(None, out.truncated):
        ctx.note(f"prompt truncated; dropped: {dropped!r}")
    images = [to_pil(img) for img in out.images]
    with ctx.section("clip"):
        if clip is not None:
            scores = clip_scores(clip, images, picture, params.prompt)
            scores["model"] = profile.display_source(CLIP_ROLE)
        else:
            missing = "could not be loaded" if profile.has(CLIP_ROLE) else "is not named in the profile"
            scores = {"note": f"the '{CLIP_ROLE}' model {missing}, so nothing was measured"}
    gallery = [(ctx.stamp(img, model_id=model_id, index=i), f"{params.mode} · seed {params.seed} · #{i}")
               for i, img in enumerate(images)]
    return dict(
        images=gallery,
        clip_scores=scores,
        **dict(zip(("diagnostics", "saturation"), diagnostics_frames(out.result, decoder.caption), strict=True)),
        metadata=ctx.metadata(model_id=model_id, rule=rule.describe(), clip=scores,
                              diagnostics_measured_on=decoder.caption),
        seed=params.seed,
    )


IMAGE_CONDITIONING = Task(IMAGE_CONDITIONING_SPEC, run_image_conditioning)
