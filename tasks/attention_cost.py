"""``/attention_cost``: what self- and cross-attention cost in the profile's UNet, counted per layer and measured.

The analytic rows come from walking the profile's UNet (its config, on the meta device) at each asked resolution;
the measured rows run the largest layer of each kind through the materialised and the fused attention on the
runtime's device (``experiments.attention_cost`` explains both and how peak memory is read).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from experiments.attention_cost import (
    CFG_BATCH,
    lecture_numbers,
    model_factor,
    slopes,
    step_totals,
    unet_attention_layers,
)
from experiments.attention_report import layer_table, measurement_table, plot_attention_cost, totals_table
from experiments.attention_timing import free_memory_bytes, measure_kinds
from models.loading.sd import load_role_sd, local_unet_config
from models.profiles import Profile
from pipelines.attention import PROCESSORS
from reporting.formats import human_bytes
from tasks import fields as F
from tasks.common import is_toy
from tasks.spec import EndpointSpec, Output, Params, Task, TaskContext

ROLE = "sd"
FIELD = "resolutions"
MAX_RESOLUTIONS = 6


def parse_resolutions(value: Any) -> list[int]:
    """``"256, 512, 1024"`` (or a list) as distinct whole pixel sides, ascending; at most ``MAX_RESOLUTIONS``.

    Whether each is a multiple of the model's factor and within the profile's pixel cap is checked against the
    profile (:func:`check_resolutions`)."""
    if isinstance(value, str):
        if len(value) > F.MAX_TEXT_CHARS:
            raise ValueError(f"{FIELD} is {len(value)} characters; the limit is {F.MAX_TEXT_CHARS}")
        parts = [p.strip() for p in value.replace(";", ",").split(",") if p.strip()]
    elif isinstance(value, list | tuple):
        parts = list(value)
    else:
        raise ValueError(f"{FIELD} must be image sides in pixels separated by commas, e.g. 256, 512, 1024; got "
                         f"{type(value).__name__}")
    if not parts:
        raise ValueError(f"{FIELD} is empty: give image sides in pixels separated by commas, e.g. 256, 512, 1024")
    sides = []
    for part in parts:
        try:
            number = float(part)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"{FIELD} must be whole numbers of pixels separated by commas; {str(part)[:40]!r} is "
                             "not a number") from None
        if isinstance(part, bool) or not math.isfinite(number) or number != int(number) or number < 1:
            raise ValueError(f"{FIELD} must be positive whole numbers of pixels; got {str(part)[:40]!r}")
        sides.append(int(number))
    sides = sorted(set(sides))
    if len(sides) > MAX_RESOLUTIONS:
        raise ValueError(f"{FIELD} takes at most {MAX_RESOLUTIONS} sizes, got {len(sides)}")
    return sides


def check_resolutions(resolutions: list[int], factor: int | None, max_pixels: int) -> None:
    """Each side a multiple of the model's ``factor`` (None: not known yet) and its square within ``max_pixels``."""
    for side in resolutions:
        if factor is not None and side % factor:
            raise ValueError(f"{FIELD}: {side} is not a multiple of {factor}, this model's factor (the VAE's "
                             f"downsampling times the UNet's); try {max(factor, side - side % factor)}")
        if side * side > max_pixels:
            largest = math.isqrt(max_pixels)
            raise ValueError(f"{FIELD}: {side}×{side} is {side * side} pixels, above this profile's cap of "
                             f"{max_pixels} (at most {largest}×{largest}; max_pixels in the profile's [limits], or "
                             "CONDLAB_MAX_PIXELS)")


def known_factor(profile: Profile) -> int | None:
    """The model's factor read from a local folder's configs (no weights loaded); None for a hub id, which is
    checked after loading instead."""
    source = profile.source(ROLE)
    configs = local_unet_config(source) if source else None
    if configs is None:
        return None
    try:
        return model_factor(*configs)
    except (KeyError, TypeError, ValueError):
        return None


def check_request(params: Params, profile: Profile) -> None:
    check_resolutions(params.resolutions, known_factor(profile), profile.limits.max_pixels)


def _sides_within(profile: Profile, candidates: tuple[int, ...]) -> list[int]:
    """The candidate sides this profile accepts: multiples of the model's factor (SD's 64 when it is not known
    before loading) inside the pixel cap."""
    factor = known_factor(profile) or 64
    return [s for s in candidates if s % factor == 0 and s * s <= profile.limits.max_pixels]


def _quick_resolutions(profile: Profile) -> str:
    sides = _sides_within(profile, (32, 64, 128))[:2] or [known_factor(profile) or 64]
    return ", ".join(map(str, sides))


def _default_resolutions(profile: Profile) -> str:
    wanted = (32, 64, 128) if is_toy(profile) else (256, 512, 1024)
    sides = _sides_within(profile, wanted)
    return ", ".join(map(str, sides)) if len(sides) > 1 else _quick_resolutions(profile)


ATTENTION_COST_SPEC = EndpointSpec(
    api_name="/attention_cost",
    summary="Self- vs cross-attention in the profile's UNet: per-layer matrix bytes and FLOPs, and measured time "
            "and peak memory of materialised vs fused (SDPA) attention",
    fields=(
        F.Field(FIELD, "custom", _default_resolutions, "image sides in pixels (comma separated)",
                parser=lambda value, field: parse_resolutions(value),
                to_input=lambda sides: ", ".join(str(s) for s in sides), quick=_quick_resolutions,
                invalid=("", " , ", "abc", "256, x", "-256", "0", "12.5", "nan", "inf", "1, 2, 3, 4, 5, 6, 7"),
                extra={"text": True}),
        F.flag("measure", True, "measure time and peak memory on this device (materialised vs SDPA)"),
    ),
    outputs=(
        Output("plot", "image", "attention matrix bytes against query tokens (log–log)", elem_id="ac-plot"),
        Output("table", "markdown", "per-layer costs, totals and measurements"),
        Output("metadata", "json", "metadata"),
    ),
    checks=(check_request,),
    cost=lambda p: 20.0 if p.measure else 1.0,  # a few attention calls; SD's largest at 1024² is ≈ 8 GiB in fp16
)


def report_markdown(layers, totals, measurements, fitted, runtime_name: str, free: int | None) -> str:
    """The three tables and what they mean, as one Markdown block."""
    slope_text = ", ".join(f"{k}: {v:.2f}" if v is not None else f"{k}: n/a (one resolution)"
                           for k, v in fitted.items())
    parts = [f"**Fitted log–log slope of the largest matrix against N** — {slope_text} (expected 2 and 1).",
             f"### Totals per image and per denoising step (CFG: batch {CFG_BATCH})", totals_table(totals)]
    if measurements:
        method = next((m.method for m in measurements if m.measured), "")
        parts += [f"### Measured on {runtime_name} (batch 1, the largest layer of each kind; {len(PROCESSORS)} "
                  f"processors)", measurement_table(measurements),
                  f"<small>peak memory: {method or 'nothing measured'}; device free: "
                  f"{human_bytes(free) if free is not None else '?'}</small>"]
    parts += ["### Every attention layer (analytic, per batch element)", layer_table(layers)]
    return "\n\n".join(parts)


def run_attention_cost(params: Params, ctx: TaskContext) -> dict:
    profile = ctx.profile
    with ctx.loading(ROLE):
        sd = load_role_sd(profile, ctx.runtime, ROLE)
    factor = model_factor(sd.unet.config, sd.vae_scale_factor)
    check_resolutions(params.resolutions, factor, profile.limits.max_pixels)  # a hub model's factor is known now
    text_tokens = int(sd.tokenizer.model_max_length) if sd.tokenizer is not None else 77
    with ctx.section("count"):
        layers = unet_attention_layers(sd.unet, params.resolutions, sd.vae_scale_factor, text_tokens)
    if not layers:
        raise ValueError(f"the '{ROLE}' model of profile '{profile.name}' has no attention layers to count")
    totals = step_totals(layers)
    fitted = slopes(layers)
    measurements, free = [], None
    if params.measure:
        free = free_memory_bytes(ctx.runtime.device)
        steps = 2 * len({(x.resolution, x.kind) for x in layers})
        done = iter(range(1, steps + 1))

        def tick() -> None:
            ctx.report(next(done), steps, "measuring attention")
            ctx.check_time("while measuring attention")

        with ctx.section("measure"):
            measurements = measure_kinds(layers, ctx.runtime, free_bytes=free, on_each=tick)
        skipped = [m for m in measurements if not m.measured]
        if skipped:
            ctx.note(f"{len(skipped)} measurement(s) were not attempted (shown analytically): {skipped[0].reason}")
    plot = plot_attention_cost(layers, measurements, free,
                               f"{profile.display_source(ROLE)}: attention matrices, {text_tokens}-token text")
    model_id = profile.display_source(ROLE)
    meta = ctx.metadata(
        model_id=model_id, model_factor=factor, text_tokens=text_tokens, cfg_batch=CFG_BATCH,
        slopes=fitted, totals=totals, layers=[x.as_row() for x in layers],
        measurements=[asdict(m) for m in measurements], device_free_bytes=free, lecture=lecture_numbers(),
    )
    table = report_markdown(layers, totals, measurements, fitted, ctx.runtime.name, free)
    return dict(plot=ctx.stamp(plot, models={ROLE: model_id}), table=table, metadata=meta)


ATTENTION_COST = Task(ATTENTION_COST_SPEC, run_attention_cost)
