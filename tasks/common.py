"""Fields and checks shared by the endpoints: prompts, the guidance registry's parameters, sampling settings."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from guidance.rules import METHODS, RULE_NAMES, RULE_PARAMS, SCALE, RunFacts, rule_from
from guidance.settings import SamplingSettings
from models.adapters.preview import PREVIEW_ROLE, PreviewDecoder, preview_decoder
from models.loading.sd import AUTOGUIDE_ROLE, is_pixel_space, load_autoguide, sd_native_size
from models.profiles import ROOT
from pipelines.schedulers import SCHEDULERS
from tasks import fields as F
from tasks.fields import Field
from tasks.spec import Output

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel

    from models.loading.sd import SDComponents
    from models.profiles import Profile
    from tasks.spec import Params

T = TypeVar("T")
# Every sampling tab's per-step diagnostics, drawn in the browser (reporting.plots.diagnostics_frames); saturation
# is the endpoint's last output so earlier outputs keep their positions for gradio_client callers.
DIAGNOSTICS_OUTPUT = Output("diagnostics", "lineplot", "guidance per step: ‖Δ∥‖ and ‖Δ⊥‖ (hover to read)",
                            y_title="norm (mean over images)")
SATURATION_OUTPUT = Output("saturation", "lineplot", "saturation of the predicted image per step", y_title="%")
TOY_EXAMPLES = ROOT / "assets" / "toy" / "examples"
PHOTOS = ROOT / "assets" / "photos"


def with_preview(profile: Profile, *roles: str) -> tuple[str, ...]:
    """The roles a run loads, plus the preview decoder's when the profile has one."""
    return (*roles, PREVIEW_ROLE) if profile.has(PREVIEW_ROLE) else roles


_ANNOUNCED: set[tuple[str, str | None]] = set()  # aids whose failure this process has already told the user about


def announce_once(ctx, role: str, text: str) -> None:
    """A note about a missing aid, the first time a request meets it (every run's metadata says it anyway)."""
    key = (role, ctx.profile.source(role))
    if key not in _ANNOUNCED:
        _ANNOUNCED.add(key)
        ctx.note(text)


def load_aid(ctx, role: str, load: Callable[[], T], without: str) -> T | None:
    """An optional model that only adds to the answer (read-outs, previews): when it cannot be loaded the run goes
    on ``without`` it, and the page says so once."""
    try:
        return load()
    except ValueError as error:  # ModelUnavailable names the role, its source and how to supply it
        announce_once(ctx, role, f"{without}: {error}"[:400])
        return None


def preview_for(ctx, sd: SDComponents, taesd: bool = True) -> PreviewDecoder:
    """The run's x̂0 preview decoder; when the profile's preview model cannot be loaded the linear map stands in
    (an aid never blocks the answer) and the page says so once. ``taesd`` False: the model's latents are not SD
    1.x's (another VAE), so the linear map fitted through its own VAE previews them."""
    decoder = preview_decoder(ctx.profile if taesd else None, sd, ctx.runtime)
    if decoder.fallback:
        announce_once(ctx, PREVIEW_ROLE, f"previews use a linear latent→RGB map: {decoder.fallback}"[:400])
    return decoder


def is_toy(profile: Profile) -> bool:
    return profile.name == "toy"


def toy_example(name: str) -> str:
    """A shapes-world input shipped for the toy profile's examples (``scripts/tools/make_toy_examples.py``)."""
    return str(TOY_EXAMPLES / f"{name}.png")


def default_side(profile: Profile, role: str) -> int:
    """The role's ``size`` option, else a local model's native size, else 512; always within the pixel cap."""
    source = profile.source(role)
    size = profile.options(role).get("size") or (sd_native_size(source) if source else None) or 512
    side = min(int(size), int(math.isqrt(profile.limits.max_pixels)))
    return max(F.SIZE_MULTIPLE, side - side % F.SIZE_MULTIPLE)


def prompt_fields(default: str = "", label: str = "prompt") -> tuple[Field, Field]:
    return (F.text("prompt", default, label, prose=True, lines=2),
            F.text("negative_prompt", "", "negative prompt (the unconditional branch)", prose=True))


# Methods that combine a model's own predictions; a method with a model_role (a distilled student) is another model
# drawing, offered only where an endpoint opts in and the profile has that role (guidance_fields(students=True)).
COMBINING = tuple(name for name in RULE_NAMES if not METHODS[name].model_role)


def method_choices(names: tuple[str, ...], students: bool):
    """The guidance choices: ``names``, plus (``students``) the methods whose model role the profile has."""
    if not students:
        return names
    return lambda profile: (*names, *(n for n in RULE_NAMES if METHODS[n].model_role and profile.has(
        METHODS[n].model_role)))


def guidance_fields(scale_default: float = SCALE.default, names: tuple[str, ...] = COMBINING,
                    with_rule: bool = True, lacks: tuple[str, ...] = (), students: bool = False) -> tuple[Field, ...]:
    """``guidance`` (a rule of the registry) and every parameter the registry's rules take, with their bounds.

    ``lacks``: what the endpoint's model does not offer ("attention" layers PAG perturbs, "pixels" to threshold):
    the parameters that need it are left out."""
    out = [F.choice("guidance", "cfg", method_choices(names, students), "guidance")] if with_rule else []
    for p in RULE_PARAMS.values():
        if p.needs and p.needs in lacks:
            continue
        if p.choices:
            out.append(F.choice(p.name, p.default, p.choices, p.label, info=p.info))
        elif p.integer:
            out.append(F.integer(p.name, p.default, p.low, p.high, p.label, step=p.step, off=p.off, info=p.info))
        else:
            default = scale_default if p is SCALE else p.default
            out.append(F.number(p.name, default, p.low, p.high, p.label, step=p.step, off=p.off, info=p.info))
    return tuple(out)


def steps_field(default: int = 25) -> Field:
    return F.integer("steps", lambda profile: min(default, profile.limits.max_steps), 1,
                     lambda profile: profile.limits.max_steps, "steps", quick=1)


def size_fields(role: str) -> tuple[Field, Field]:
    side = lambda profile: default_side(profile, role)  # noqa: E731
    return F.size("width", side), F.size("height", side)


def scheduler_field() -> Field:
    return F.choice("scheduler", "ddim", tuple(SCHEDULERS), "scheduler", widget="dropdown")


def images_field() -> Field:
    return F.integer("num_images", 1, 1, lambda profile: profile.limits.max_images, "images", quick=1)


def ddim_eta_field() -> Field:
    return F.number("ddim_eta", 0.0, 0.0, 1.0, "DDIM η (0 = deterministic)", step=0.05, variants=(1.0,),
                    info="DDIM's noise per step (Song et al. 2021): 0 is the deterministic DDIM sampler, 1 adds the "
                         "DDPM posterior's noise; the ddim scheduler only")


def sampling_fields(role: str, *, num_images: bool = True) -> tuple[Field, ...]:
    """steps, width, height, seed, scheduler, DDIM η (and num_images): every SD-style endpoint's sampling
    settings, the fields of :class:`~guidance.settings.SamplingSettings`."""
    out = (steps_field(), *size_fields(role), F.seed(), scheduler_field(), ddim_eta_field())
    return (*out, images_field()) if num_images else out


def check_pixels(params: Params, profile: Profile) -> None:
    """width × height within the profile's cap (each side was checked alone already)."""
    cap = profile.limits.max_pixels
    pixels = params["width"] * params["height"]
    if pixels > cap:
        raise ValueError(f"{params['width']}x{params['height']} is {pixels} pixels, above this profile's cap of "
                         f"{cap} (max_pixels in the profile's [limits], or CONDLAB_MAX_PIXELS)")


def check_guidance(params: Params, profile: Profile, role: str = "sd") -> None:
    """The rule as a whole (its parameters together), and what it and its modifiers need from the scheduler, the
    model and the profile: refused before any model work with a message that says what to change."""
    rule = rule_from(params)
    rule.check(RunFacts(params.get("scheduler", "ddim"), is_pixel_space(profile, role), params.get("ddim_eta", 0.0)))
    if rule.uncond_branch == "weak" and not profile.has(AUTOGUIDE_ROLE):
        raise ValueError(f"autoguidance needs a weaker version of the model: the profile '{profile.name}' names no "
                         f"'{AUTOGUIDE_ROLE}' role (add {AUTOGUIDE_ROLE} = \"/folder/with/unet\" to its TOML)")


def check_sampler(params: Params, profile: Profile) -> None:
    """Sampler settings that only make sense together (DDIM's η with the DDIM scheduler)."""
    if params.get("ddim_eta") and params.get("scheduler", "ddim") != "ddim":
        raise ValueError(f"ddim_eta is DDIM's noise level: set scheduler to ddim, or ddim_eta to 0 (got scheduler "
                         f"{params['scheduler']})")


def guidance_roles(params: Params, profile: Profile) -> tuple[str, ...]:
    """The extra roles a rule loads (autoguidance's weak model)."""
    return (AUTOGUIDE_ROLE,) if rule_from(params).uncond_branch == "weak" else ()


def load_weak(params: Params, ctx) -> UNet2DConditionModel | None:
    """Autoguidance's weaker model when the rule asks for it (call inside ``ctx.loading``)."""
    return load_autoguide(ctx.profile, ctx.runtime) if rule_from(params).uncond_branch == "weak" else None


def sd_cost(params: Params, rows: int | None = None) -> float:
    """Megapixel-steps of UNet work: steps × pixels × batch rows × model evaluations per step (CFG: two; the rule's
    modifiers add or remove evaluations: PAG a third, the interval fewer)."""
    rows = params.get("num_images", 1) if rows is None else rows
    return params["steps"] * params["width"] * params["height"] / 1e6 * rows * evaluations_per_step(params)


def evaluations_per_step(params: Params) -> float:
    """Model rows per image and step for the request's rule (a sweep: its most expensive method)."""
    if "methods" in params:
        return max(rule_from(params.replace(guidance=m, scale=params["scales"][0])).mean_evaluations(params["steps"])
                   for m in params["methods"])
    return rule_from(params).mean_evaluations(params["steps"]) if "guidance" in params else 2.0


def sampling_settings(params: Params, ctx, **hooks) -> SamplingSettings:
    """The request's sampling settings, built once, with the run's progress callback (and any other hooks)."""
    return SamplingSettings.from_request(params, callback=ctx.steps(), **hooks)
