"""The profile's text-to-image models (the ``model`` parameter): which roles exist, what each can do, and one way to
load and sample any of them through the one loop.

A role's *kind* decides the code path: ``unet`` (SD-style folders: ``sd`` with its CLIP text encoder, ``sd_t5`` the
same UNet design on the order-aware toy T5), ``pixart`` (PixArt-Σ: a DiT reading T5 through cross-attention, AdaLN-
single) and ``flow`` (a rectified-flow MM-DiT: SD3.5 in the full profile, the toy MM-DiT). What a kind cannot do is
refused before any model work with the reason, so a request never fails half-way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from guidance.rules import GuidanceRule, Rule, RunFacts, rule_from
from models.loading.sd import require_source, revision_of
from pipelines.flow import FLOW_SCHEDULER, check_flow_rule
from tasks import fields as F
from tasks.common import AUTOGUIDE_ROLE, check_guidance, preview_for

if TYPE_CHECKING:
    from guidance.settings import SamplingSettings
    from models.adapters.preview import PreviewDecoder
    from models.profiles import Profile
    from pipelines.text_to_image import GenerationResult
    from tasks.spec import Params, TaskContext


@dataclass(frozen=True)
class TextModel:
    """One text-to-image role: its kind and what it lacks (``"attention"``: no UNet self-attention layers for PAG or
    for choosing how attention computes; ``"maps"``: no cross-attention maps recorded here)."""

    role: str
    kind: str
    label: str
    lacks: tuple[str, ...] = ()


TEXT_MODELS: dict[str, TextModel] = {m.role: m for m in (
    TextModel("sd", "unet", "Stable Diffusion layout: a UNet reading CLIP text states"),
    TextModel("sd_t5", "unet", "the same UNet design reading an order-aware T5 encoder"),
    TextModel("pixart", "pixart", "PixArt-Σ: a DiT reading T5 through cross-attention (AdaLN-single)",
              lacks=("attention", "maps")),
    TextModel("flow", "flow", "rectified flow: an MM-DiT, text and image tokens in joint attention",
              lacks=("attention", "maps")),
)}


def text_model_roles(profile: Profile) -> tuple[str, ...]:
    """The profile's text-to-image roles, in the registry's order (``sd`` first when present)."""
    return tuple(role for role in TEXT_MODELS if profile.has(role)) or ("sd",)


def _parse_model(value: Any, field: F.Field) -> str:
    if value not in TEXT_MODELS:
        raise ValueError(f"model must be one of {', '.join(field.choices)}; got {str(value)[:40]!r}")
    return value


def model_field() -> F.Field:
    """``model``: which of the profile's text-to-image roles draws (a role the profile lacks is refused by
    :func:`check_text_model` with how to add it)."""
    return F.Field("model", "choice", "sd", "model", choices=text_model_roles, parser=_parse_model,
                   info="which of the profile's text-to-image models draws: sd (CLIP text encoder), sd_t5 (the "
                        "same UNet on an order-aware T5 encoder), pixart (PixArt-Σ, T5), flow (rectified flow, "
                        "joint attention)")


def check_text_model(params: Params, profile: Profile) -> None:
    """The model exists in this profile, and the rule and options can run on its kind: refused before any model
    work with what to change."""
    role = params["model"]
    model = TEXT_MODELS[role]
    require_source(profile, role)
    rule = rule_from(params)
    if rule.uncond_branch == "weak" and role != "sd":
        raise ValueError(f"autoguidance guides with a weaker twin of the sd model ({AUTOGUIDE_ROLE}); model {role} "
                         "has none: choose model sd or another method")
    if "attention" in model.lacks:
        if any(m.extra_branch for m in rule.modifiers):
            raise ValueError(f"PAG perturbs a UNet's self-attention layers; model {role} ({model.kind}) has none: set "
                             "pag_scale to 0")
        if params.get("attention", "sdpa") != "sdpa":
            raise ValueError(f"attention = {params['attention']} swaps a UNet's attention processors; model {role} "
                             "keeps its own: leave attention at sdpa")
    if "maps" in model.lacks and str(params.get("attention_token", "")).strip():
        raise ValueError(f"cross-attention maps are recorded on UNet models here (sd, sd_t5); model {role} attends "
                         "differently: leave attention_token empty")
    if model.kind == "flow":
        check_flow_rule(rule)
        if params.get("ddim_eta"):
            raise ValueError("ddim_eta is DDIM's noise: a rectified-flow model samples with its own flow-matching "
                             "Euler scheduler, so set ddim_eta to 0")
        rule.check(RunFacts(FLOW_SCHEDULER, _flow_pixel_space(profile, role), 0.0))
    elif model.kind == "pixart":
        rule.check(RunFacts(params.get("scheduler", "ddim"), False, params.get("ddim_eta", 0.0)))
    else:
        check_guidance(params, profile, role)


def _flow_pixel_space(profile: Profile, role: str) -> bool:
    """A local flow folder without ``vae/`` samples pixels (the toy); a hub id is a latent model."""
    from pathlib import Path

    source = profile.source(role)
    return bool(source) and Path(source).is_dir() and not (Path(source) / "vae").is_dir()


@dataclass
class LoadedModel:
    """A text-to-image role loaded for a run: its components, how to preview x̂0, and how to sample it."""

    role: str
    components: Any
    preview: PreviewDecoder
    draw: Callable[..., GenerationResult]  # (prompt, negative_prompt, rule, settings, generator) → result


def load_text_model(ctx: TaskContext, role: str) -> LoadedModel:
    """Load the role (call inside ``ctx.loading``) and bind its sampling function."""
    kind = TEXT_MODELS[role].kind
    if kind == "unet":
        from models.loading.sd import load_role_sd
        from pipelines.text_to_image import text_to_image

        sd = load_role_sd(ctx.profile, ctx.runtime, role)
        # TAESD decodes SD 1.x latents only: other roles preview through their own VAE's linear map (or pixels).
        preview = preview_for(ctx, sd, taesd=role == "sd")

        def draw(prompt, negative_prompt, rule, settings, generator=None, **options):
            return text_to_image(sd, prompt, negative_prompt=negative_prompt, rule=rule, settings=settings,
                                 generator=generator, **options)

        return LoadedModel(role, sd, preview, draw)
    if kind == "pixart":
        from models.loading.pixart import load_pixart
        from pipelines.pixart import pixart_to_image

        options = ctx.profile.options(role)
        pixart = load_pixart(require_source(ctx.profile, role), options.get("base", ""), ctx.runtime,
                             transformer_revision=revision_of(ctx.profile, role),
                             base_revision=options.get("base_revision"))
        return LoadedModel(role, pixart, preview_for(ctx, pixart, taesd=False),
                           lambda prompt, negative_prompt, rule, settings, generator=None: pixart_to_image(
                               pixart, prompt, negative_prompt=negative_prompt, rule=rule, settings=settings,
                               generator=generator))
    from models.loading.flow import load_role_flow
    from pipelines.flow import flow_to_image

    flow = load_role_flow(ctx.profile, ctx.runtime, role)
    return LoadedModel(role, flow, preview_for(ctx, flow, taesd=False),
                       lambda prompt, negative_prompt, rule, settings, generator=None: flow_to_image(
                           flow, prompt, negative_prompt=negative_prompt, rule=rule, settings=settings,
                           generator=generator))


def sample_text_model(model: LoadedModel, prompt: str, negative_prompt: str, rule: Rule | GuidanceRule,
                      settings: SamplingSettings, **options: Any) -> GenerationResult:
    """One prompt through the role's pipeline (``options``: the UNet path's attention recording and kind)."""
    return model.draw(prompt, negative_prompt, rule, settings, **options)
