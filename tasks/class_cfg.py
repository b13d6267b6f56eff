"""``/class_cfg``: class-conditional sampling with CFG (or any two-branch rule of the registry) on a DiT.

Full: ``facebook/DiT-XL-2-256`` on ImageNet's 1000 classes (the same picker as ``/classifier_guidance``). Toy: a DiT
trained here on the shapes world's 24 (colour, shape) classes with label dropout (``scripts/train/toy_dit.py``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from condition.labels import check_class_id, class_id_in, display_name, display_names, resolve_class
from guidance.rules import METHODS, RULE_NAMES, rule_from
from models.loading.dit import ROLE, class_names_from_index, load_dit, local_dit_index
from models.loading.sd import is_pixel_space
from models.profiles import Profile
from pipelines.class_cfg import CLIP_HELP, CLIP_MODES, OWN, SCHEDULER_CHOICES, check_clip_mode, class_cfg_sample
from pipelines.text_to_image import to_pil
from reporting.plots import diagnostics_frames
from tasks import fields as F
from tasks.common import (
    DIAGNOSTICS_OUTPUT,
    SATURATION_OUTPUT,
    check_guidance,
    evaluations_per_step,
    guidance_fields,
    images_field,
    sampling_settings,
    steps_field,
)
from tasks.spec import EndpointSpec, Output, Params, Task, TaskContext

DEFAULT_IMAGENET_CLASS = 207  # golden retriever, as in the classifier-guidance tab
# Two predictions per step, both from the DiT: autoguidance needs a weaker DiT and PAG a UNet's layer names.
DIT_RULES = tuple(name for name in RULE_NAMES if METHODS[name].uncond_branch in ("uncond", "cond")
                  and not METHODS[name].model_role)
# A DiT-XL/2 forward at 256² (119 GFLOPs, DiT paper Table 4) costs about what SD 1.5's UNet spends on this many
# megapixels; scripts/tools/gpu_check.py measures the real figure on a GPU.
DIT_MEGAPIXEL_EQUIVALENT = 0.3


def _local_config(profile: Profile) -> dict | None:
    source = profile.source(ROLE)
    try:
        return json.loads((Path(source) / "transformer" / "config.json").read_text()) if source else None
    except (OSError, ValueError):
        return None


def num_classes(profile: Profile) -> int:
    config = _local_config(profile)
    return int(config.get("num_embeds_ada_norm") or 1000) if config else 1000


def class_names(profile: Profile) -> tuple[str, ...] | None:
    """A local folder's ``id2label`` (None without one: ids only); a 1000-class DiT (any hub DiT, a local copy of
    DiT-XL/2) gets the ImageNet picker of the classifier-guidance tab."""
    source = profile.source(ROLE)
    if source and Path(source).is_dir():
        names = class_names_from_index(local_dit_index(source) or {}, num_classes(profile))
        return display_names() if names is not None and len(names) == 1000 else names
    return display_names()


def image_size(profile: Profile) -> int | None:
    """The side of the DiT's images read from its configs; 256 for a hub id (DiT-XL-2-256); None for a local folder
    that cannot be read (loading it then says which role is missing and how to supply it)."""
    config = _local_config(profile)
    if config is None:
        source = profile.source(ROLE)
        return None if source is None or Path(source).is_absolute() else 256
    source = Path(profile.source(ROLE))
    factor = 1
    if (source / "vae" / "config.json").exists():
        factor = 2 ** (len(json.loads((source / "vae" / "config.json").read_text())["block_out_channels"]) - 1)
    return int(config.get("sample_size", 32)) * factor


def _default_class(profile: Profile) -> str:
    names = class_names(profile)
    if not names:
        return ""
    return display_name(DEFAULT_IMAGENET_CLASS) if len(names) == 1000 else names[0]


def _class_label(profile: Profile) -> str:
    names = class_names(profile)
    if names is None:
        return "class (this DiT's folder has no id2label: pick by class id below)"
    return "ImageNet class (type to search)" if len(names) == 1000 else "class (colour, shape)"


def resolve(params: Params, profile: Profile) -> Mapping[str, Any]:
    """The class id (the name when class_id is −1; unknown names get the closest suggestions), the image size
    against the pixel cap, the scheduler's clipping mode."""
    names = class_names(profile)
    count = num_classes(profile)
    given = params.class_id not in (None, "", -1)
    if given:
        target = check_class_id(params.class_id, count)
    elif names is None:
        raise ValueError(f"this DiT's folder has no id2label in model_index.json, so classes have no names: give "
                         f"class_id (0–{count - 1})")
    elif len(names) == 1000:
        target = resolve_class(params.class_name, None)
    else:
        target = class_id_in(params.class_name, None, names)
    size = image_size(profile)
    if size is not None and size * size > profile.limits.max_pixels:
        raise ValueError(f"this DiT makes {size}×{size} images; this server allows {profile.limits.max_pixels} "
                         "pixels per image")
    check_clip_mode(params.clip_sample, "ddim" if params.scheduler == OWN else params.scheduler)
    if params.clip_sample != "off" and not is_pixel_space(profile, ROLE):
        raise ValueError("clip_sample clips x̂0 to the pixel range [−1, 1]; this DiT works in latent space, so leave "
                         "it off")
    label = names[target] if names else f"class {target}"
    return dict(class_name=label, class_id=target, image_size=size)


def check_rule(params: Params, profile: Profile) -> None:
    check_guidance(params.replace(scheduler="ddim" if params.scheduler == OWN else params.scheduler), profile, ROLE)


def cost(params: Params) -> float:
    per_image = DIT_MEGAPIXEL_EQUIVALENT if params.image_size >= 256 else params.image_size**2 / 1e6
    return params.steps * per_image * params.num_images * evaluations_per_step(params)


CLASS_CFG_SPEC = EndpointSpec(
    api_name="/class_cfg",
    summary="Class-conditional DiT (AdaLN-zero) with classifier-free guidance: the class label vs the null label",
    fields=(
        F.text("class_name", _default_class, _class_label, widget="dropdown",
               choices=lambda p: class_names(p) or ()),
        F.integer("class_id", -1, -1, lambda p: num_classes(p) - 1,
                  lambda p: f"or class id 0–{num_classes(p) - 1} (−1 = use the name)", widget="number",
                  optional=True),
        *guidance_fields(4.0, names=DIT_RULES, lacks=("attention",)),  # PAG names a UNet's self-attention layers
        steps_field(),
        F.choice("scheduler", OWN, SCHEDULER_CHOICES, "scheduler (own = the model's scheduler_config.json)",
                 widget="dropdown", info="own: the scheduler the model folder ships (DiTPipeline's choice); the "
                 "others are the diffusers schedulers of the text-to-image tab (CFG++ needs ddim, thresholding ddim or "
                 "ddpm)."),
        F.choice("clip_sample", "off", CLIP_MODES, "x̂0 clipping in the DDIM step", info=CLIP_HELP),
        F.seed(),
        images_field(),
    ),
    outputs=(
        Output("samples", "gallery", "samples (PNG, parameters embedded)", columns=4, elem_id="ccfg-gallery",
               preview=True),
        DIAGNOSTICS_OUTPUT,
        Output("metadata", "json", "metadata"),
        Output("seed", "number", "seed used"),
        SATURATION_OUTPUT,
    ),
    checks=(resolve, check_rule),
    cost=cost,
)


def run_class_cfg(params: Params, ctx: TaskContext) -> dict:
    with ctx.loading(ROLE):
        dit = load_dit(ctx.profile, ctx.runtime)
    if dit.class_names is None:
        ctx.note("this DiT's model_index.json has no id2label: classes are shown by number")
    rule = rule_from(params)
    with ctx.section("sample"):
        out = class_cfg_sample(dit, class_id=params.class_id, rule=rule, clip_sample=params.clip_sample,
                               settings=sampling_settings(params, ctx))
    model_id = ctx.profile.display_source(ROLE)
    label = dit.label(params.class_id)
    gallery = [(ctx.stamp(to_pil(img), model_id=model_id, index=i), f"{label} · seed {params.seed} · #{i}")
               for i, img in enumerate(out.images)]
    title = f"{label}: {rule.name}, w = {rule.scale:g}, {out.scheduler} {params.steps}"
    meta = ctx.metadata(model_id=model_id, rule=rule.describe(), scheduler_used=out.scheduler,
                        null_class=dit.null_class, learned_sigma=dit.learned_sigma, seconds=round(out.seconds, 3))
    guidance_frame, saturation_frame = diagnostics_frames(out.result)
    return dict(samples=gallery, diagnostics=guidance_frame, metadata={**meta, "title": title}, seed=params.seed,
                saturation=saturation_frame)


CLASS_CFG = Task(CLASS_CFG_SPEC, run_class_cfg)
