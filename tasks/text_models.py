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
from tasks.common import AUTOGUIDE_ROLE, check_guidance, preview_for, sd_cost

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
    # Denoiser FLOPs per image-step relative to SD 1.5's UNet at the same size (``scripts/tools/model_flops.py``, the
    # larger of its 512² and 1024² ratios): scales the ZeroGPU budget, which is written in SD 1.5 megapixel-steps.
    work: float = 1.0


TEXT_MODELS: dict[str, TextModel] = {m.role: m for m in (
    TextModel("sd", "unet", "Stable Diffusion layout: a UNet reading CLIP text states"),
    TextModel("sd_t5", "unet", "the same UNet design reading an order-aware T5 encoder"),
    TextModel("pixart", "pixart", "PixArt-Σ: a DiT reading T5 through cross-attention (AdaLN-single)",
              lacks=("attention", "maps"), work=1.6),
    TextModel("flow", "flow", "rectified flow: an MM-DiT, text and image tokens in joint attention",
              lacks=("attention", "maps"), work=3.0),
)}


def text_to_image_cost(params: Params, rows: int | None = None) -> float:
    """SD 1.5 megapixel-steps of the request (``sd_cost``) times its model's work factor."""
    return sd_cost(params, rows) * TEXT_MODELS[params.get("model", "sd")].work


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


def student_guidance(profile: Profile, role: str) -> dict[str, Any]:
    """A distilled student's ``guidance.json``: the w range it was trained on, how w is scaled into its timestep-kind
    embedding, and its teacher's role (read without loading weights)."""
    import json
    from pathlib import Path

    source = require_source(profile, role)
    try:
        if Path(source).is_dir():
            return json.loads((Path(source) / "guidance.json").read_text())
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(source, "guidance.json", revision=revision_of(profile, role)))
                          .read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"the '{role}' model has no readable guidance.json (its w range and embedding scale): "
                         f"{type(error).__name__}") from error


def check_student(params: Params, profile: Profile, rule: GuidanceRule) -> None:
    """A distilled student draws: its role exists, the request names its teacher as the model, w lies in the range
    it was trained on, and no modifier asks for steps or branches the one student call cannot give."""
    role = rule.method.model_role
    if not profile.has(role):
        raise ValueError(f"guidance {rule.name} needs a distilled student: the profile '{profile.name}' names no "
                         f"'{role}' role (scripts/train/toy_distill.py writes one; add {role} = \"/folder\" to the "
                         "profile TOML)")
    info = student_guidance(profile, role)
    if params["model"] != info.get("teacher", "sd"):
        raise ValueError(f"the distilled student was distilled from model {info.get('teacher', 'sd')}: set model to "
                         f"it (got {params['model']})")
    low, high = float(info["w_min"]), float(info["w_max"])
    if not low <= rule.scale <= high:
        raise ValueError(f"the distilled student was trained on w in [{low:g}, {high:g}]; got scale {rule.scale:g}")
    acting = [m.label or m.name for m in rule.modifiers if m.extra_branch or m.acts_at]
    if acting:
        raise ValueError(f"the student guides inside its one call: {', '.join(acting)} cannot act on it (switch "
                         "them off)")


def check_text_model(params: Params, profile: Profile) -> None:
    """The model exists in this profile, and the rule and options can run on its kind: refused before any model
    work with what to change."""
    role = params["model"]
    model = TEXT_MODELS[role]
    require_source(profile, role)
    rule = rule_from(params)
    if rule.method.model_role:
        check_student(params, profile, rule)
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


def load_student(ctx: TaskContext, role: str) -> LoadedModel:
    """A distilled student (SD layout, a UNet with a timestep-kind class embedding for w): one call per step, w
    handed to its embedding as ``w × embedding_scale``, the rule's own combine a no-op."""
    import torch

    from models.loading.sd import load_role_sd
    from pipelines.text_to_image import text_to_image

    student = load_role_sd(ctx.profile, ctx.runtime, role)
    scale_of_w = float(student_guidance(ctx.profile, role)["embedding_scale"])

    def draw(prompt, negative_prompt, rule, settings, generator=None, **options):
        labels = torch.full((settings.num_images,), rule.scale * scale_of_w, device=student.device)
        return text_to_image(student, prompt, negative_prompt=negative_prompt, rule=rule, settings=settings,
                             generator=generator, class_labels=labels, **options)

    return LoadedModel(role, student, preview_for(ctx, student, taesd=False), draw)


def load_text_model(ctx: TaskContext, role: str) -> LoadedModel:
    """Load the role (call inside ``ctx.loading``) and bind its sampling function."""
    if role not in TEXT_MODELS:  # a model role of a method (a distilled student)
        return load_student(ctx, role)
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
