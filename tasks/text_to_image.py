"""``/text_to_image`` and ``/guidance_sweep``: Stable Diffusion (or the toy pixel model) through the one loop."""

from __future__ import annotations

import time
from functools import partial

from condition.text import prompt_tokens, token_offset
from guidance.rules import METHODS, RULE_PARAMS, SCALE, GuidanceRule, rule_from
from guidance.settings import SamplingSettings
from models.loading.sd import AUTOGUIDE_ROLE, load_autoguide
from models.runtime import PEAK_MEMORY_METHOD, peak_memory
from pipelines.attention import PROCESSORS, cross_attention_layers, overlay, processor, token_map, token_positions
from pipelines.sweep import guidance_sweep, parse_methods, parse_scales, sweep_cells, sweep_grid
from pipelines.text_to_image import to_pil
from reporting.formats import human_bytes
from reporting.plots import diagnostics_frames
from tasks import fields as F
from tasks.common import (
    DIAGNOSTICS_OUTPUT,
    SATURATION_OUTPUT,
    check_pixels,
    check_sampler,
    guidance_fields,
    guidance_roles,
    is_toy,
    load_weak,
    prompt_fields,
    sampling_fields,
    sampling_settings,
    with_preview,
)
from tasks.spec import EndpointSpec, Output, Params, Task, TaskContext
from tasks.text_models import (
    TEXT_MODELS,
    check_text_model,
    load_text_model,
    model_field,
    sample_text_model,
    text_to_image_cost,
)

ROLE = "sd"


def _default_prompt(profile) -> str:
    return "a red circle" if is_toy(profile) else "a photo of a red cat"


TEXT_TO_IMAGE_SPEC = EndpointSpec(
    api_name="/text_to_image",
    summary="Text to image with a guidance rule of the registry, per-step diagnostics and a cross-attention map",
    fields=(
        *prompt_fields(_default_prompt),
        *guidance_fields(students=True),
        *sampling_fields(ROLE),
        F.text("attention_token", "", "cross-attention map for token (empty = off)",
               extra={"placeholder": "e.g. red"}),
        F.choice("attention", "sdpa", PROCESSORS, "attention computed as", info="sdpa: fused "
                 "scaled_dot_product_attention (AttnProcessor2_0), which never forms the attention matrix; "
                 "materialised: AttnProcessor, which stores every layer's softmax matrix (same pixels, more memory)."),
        F.flag("measure_memory", False, "measure peak memory", info="the run's peak memory into the metadata (CPU: "
               "the run goes under the torch profiler, ≈ 1.3× slower on the toy)"),
        model_field(),
        F.choice("compare_with", "none", ("none", "cfg"), "compare with",
                 info="cfg: also draw plain CFG at the same seed and scale, shown beside the result in a slider, with "
                      "what each cost"),
    ),
    outputs=(
        Output("images", "gallery", "images (PNG, parameters embedded)", elem_id="t2i-gallery", preview=True),
        DIAGNOSTICS_OUTPUT,
        Output("metadata", "json", "metadata"),
        Output("seed", "number", "seed used"),
        Output("attention", "gallery", "cross-attention overlay"),
        Output("snippet", "code", "reproduce with gradio_client"),
        SATURATION_OUTPUT,
        Output("compare", "slider", "this method ↔ plain CFG (same seed and scale; drag to compare)",
               elem_id="t2i-compare", requested_by="compare_with"),
    ),
    checks=(check_pixels, check_sampler, check_text_model),
    cost=text_to_image_cost,
)


def run_text_to_image(params: Params, ctx: TaskContext) -> dict:
    # A distilled student draws in the model's place (one call per step); everything else is the model's own path.
    role = METHODS[params.guidance].model_role or params.model
    unet = role not in TEXT_MODELS or TEXT_MODELS[role].kind == "unet"
    with ctx.loading(*with_preview(ctx.profile, role, *guidance_roles(params, ctx.profile)) if role == ROLE
                     else (role, *guidance_roles(params, ctx.profile))):
        model = load_text_model(ctx, role)
        weak = load_weak(params, ctx)
    token = params.attention_token.strip()
    tokenizer = getattr(model.components, "tokenizer", None)
    positions = (token_positions(prompt_tokens(tokenizer, params.prompt), token, token_offset(tokenizer))
                 if token and unet else [])
    rule = rule_from(params)
    settings = sampling_settings(params, ctx, preview=model.preview)
    # The UNet path records cross-attention and chooses how attention computes; the transformers keep their own.
    options = dict(attention=bool(positions), weak=weak, attention_kind=params.attention) if unet else {}
    run = partial(sample_text_model, model, params.prompt, params.negative_prompt, rule, settings, **options)
    with ctx.section("sample"):
        started = time.perf_counter()
        out, peak = peak_memory(run, ctx.runtime.device) if params.measure_memory else (run(), None)
        seconds = time.perf_counter() - started
        compared = compare_with_cfg(params, ctx, model, rule, settings, seconds) if params.compare_with == "cfg" \
            else None
    window = getattr(tokenizer, "model_max_length", None)
    for dropped in filter(None, out.truncated):
        ctx.note(f"prompt truncated to the text encoder's {window} tokens; dropped: {dropped!r}")
    model_id = ctx.profile.display_source(role)
    with ctx.section("present"):
        images = [to_pil(img) for img in out.images]
        gallery = [(ctx.stamp(img, model_id=model_id, index=i), f"seed {params.seed} · #{i}")
                   for i, img in enumerate(images)]
        overlays = []
        if out.attention is not None:
            heat = token_map(out.attention, positions)
            overlays = [(overlay(img, heat[i]), f"attention to {token!r} · #{i}") for i, img in enumerate(images)]
        guidance_frame, saturation_frame = diagnostics_frames(out.result, model.preview.caption)
        slider = (images[0], to_pil(compared[0].images[0])) if compared else None
    # After the sections, so the metadata's timings hold them all (model work: sample; presentation: present).
    layers = len(cross_attention_layers(model.components.unet)) if unet else 0
    extra = {"compare": compared[1]} if compared else {}
    metadata = ctx.metadata(model_id=model_id, model=role, rule=rule.describe(), truncated=bool(ctx.notes),
                            model_rows_per_step=rule.mean_evaluations(params.steps),
                            diagnostics_measured_on=model.preview.caption,
                            attention=attention_run(out.attention_kind, ctx, seconds, peak,
                                                    recorded=bool(positions), cross_layers=layers), **extra)
    return dict(images=gallery, diagnostics=guidance_frame, metadata=metadata, seed=params.seed, attention=overlays,
                snippet=ctx.snippet(), saturation=saturation_frame, compare=slider)


def compare_with_cfg(params: Params, ctx: TaskContext, model, rule: GuidanceRule, settings, seconds: float):
    """Plain CFG at the request's seed and scale on the same model (no modifiers), and what each run cost: wall time
    and model rows per image and step."""
    plain = GuidanceRule("cfg", rule.scale)
    if rule == plain:
        ctx.note("the method is plain CFG already: the comparison shows the same image twice")
    started = time.perf_counter()
    other = sample_text_model(model, params.prompt, params.negative_prompt, plain,
                              settings.replace(callback=ctx.steps("plain CFG, for the comparison")))
    cost = {"method": {"rule": rule.name, "seconds": round(seconds, 3),
                       "model_rows_per_step": rule.mean_evaluations(params.steps)},
            "cfg": {"rule": "cfg", "scale": plain.scale, "seconds": round(time.perf_counter() - started, 3),
                    "model_rows_per_step": plain.mean_evaluations(params.steps)}}
    return other, cost


def attention_run(kind: str | None, ctx: TaskContext, seconds: float, peak: int | None, recorded: bool,
                  cross_layers: int) -> dict:
    """The metadata's ``attention``: which computation ran, the run's wall time and (when measured) peak memory."""
    device = ctx.runtime.device.type
    if kind is None:  # a transformer model: its own attention processors (fused where diffusers fuses them)
        out = {"kind": "the model's own", "seconds": round(seconds, 3)}
    else:
        out = {"kind": kind, "processor": type(processor(kind)).__name__, "seconds": round(seconds, 3)}
    if peak is None:
        out["peak_memory"] = "not measured (set measure_memory)"
    else:
        out.update(peak_memory=human_bytes(peak), peak_memory_bytes=peak, peak_memory_method=PEAK_MEMORY_METHOD[device])
        if device == "cpu":
            out["seconds_note"] = "timed under the torch profiler"
    if recorded:
        # The recorder forms the softmax the fused kernel never does: say so, since it adds to the memory.
        out["token_map"] = (f"the softmax of {cross_layers} cross-attention layers recomputed materialised beside "
                            f"their {kind} output, for the attention_token map")
    return out


TEXT_TO_IMAGE = Task(TEXT_TO_IMAGE_SPEC, run_text_to_image)


def check_sweep(params: Params, profile) -> None:
    """Every cell's rule is checked like a single run's (a method's own scale cap, scheduler and roles)."""
    for method in params.methods:
        for scale in params.scales:
            check_text_model(params.replace(guidance=method, scale=scale), profile)


def sweep_method_variants(profile) -> tuple[str, ...]:
    """Each guiding method alone, and one mix with a method of every kind of u (batched together and run apart), a
    stateful one and one that rewrites the DDIM step."""
    guiding = [name for name, method in METHODS.items() if method.needs_uncond]
    kinds = {METHODS[name].uncond_branch: name for name in reversed(guiding)}
    stateful = next(name for name in guiding if METHODS[name].stateful)
    ddim = next(name for name in guiding if METHODS[name].needs_ddim)
    return (*guiding, ", ".join(dict.fromkeys([*reversed(kinds.values()), stateful, ddim])))


GUIDANCE_SWEEP_SPEC = EndpointSpec(
    api_name="/guidance_sweep",
    summary="One seed, methods × scales as one batched run (where the methods allow it), as a labelled grid",
    fields=(
        *prompt_fields(_default_prompt),
        F.Field("methods", "custom", "cfg, perp-cfg", "methods (comma separated: rows of the grid)",
                parser=lambda value, field: parse_methods(value), to_input=", ".join, quick="cfg, perp-cfg",
                invalid=("", "cfg, magic", "none", ", ".join(["cfg"] * 7)), variants=sweep_method_variants,
                extra={"text": True}),
        F.Field("scales", "custom", "1, 3, 7.5, 12, 20", "scales (comma separated)",
                parser=lambda value, field: parse_scales(value),
                to_input=lambda scales: ", ".join(f"{s:g}" for s in scales), quick="1, 3",
                invalid=("", "1, x", "1, nan", "-1", "1, 2, 3, 4, 5, 6, 7, 8, 9"), extra={"text": True}),
        *(f for f in guidance_fields(with_rule=False) if f.name != SCALE.name),
        *sampling_fields(ROLE, num_images=False),
        model_field(),
    ),
    outputs=(
        Output("grid", "image", "sweep grid", preview=True),
        Output("metadata", "json", "sweep metadata"),
        Output("seed", "number", "seed used"),
    ),
    checks=(check_pixels, check_sampler, check_sweep),
    cost=lambda p: text_to_image_cost(p, rows=len(p.methods) * len(p.scales)),
)


def run_guidance_sweep(params: Params, ctx: TaskContext) -> dict:
    role = params.model
    autoguided = any(METHODS[m].uncond_branch == "weak" for m in params.methods)
    roles = (role, *((AUTOGUIDE_ROLE,) if autoguided else ()))
    with ctx.loading(*(with_preview(ctx.profile, *roles) if role == ROLE else roles)):
        model = load_text_model(ctx, role)
        weak = load_autoguide(ctx.profile, ctx.runtime) if autoguided else None
    cells = [(rule, scale) for rule in params.methods for scale in params.scales]
    options = {k: params[k] for k in RULE_PARAMS if k in params}
    with ctx.section("sample"):
        progress = ctx.steps("denoising all cells", arrange=lambda images: [sweep_grid(images, cells)])
        settings = SamplingSettings.from_request(params, callback=progress, preview=model.preview)
        if TEXT_MODELS[role].kind == "unet":
            out = guidance_sweep(model.components, params.prompt, params.scales, negative_prompt=params.negative_prompt,
                                 rules=params.methods, options=options, weak=weak, settings=settings)
        else:
            out = sweep_cells(lambda rule, run_settings, generators: model.draw(
                params.prompt, params.negative_prompt, rule, run_settings, generator=generators),
                params.scales, rules=params.methods, options=options, settings=settings)
    model_id = ctx.profile.display_source(role)
    grid = ctx.stamp(sweep_grid(out.images, out.cells), model_id=model_id)
    meta = ctx.metadata(model_id=model_id, model=role, cells=[{"rule": r, "scale": s} for r, s in out.cells],
                        batched_rows=len(out.cells), truncated=any(out.truncated),
                        diagnostics_measured_on=model.preview.caption)
    return dict(grid=grid, metadata=meta, seed=params.seed)


GUIDANCE_SWEEP = Task(GUIDANCE_SWEEP_SPEC, run_guidance_sweep)
