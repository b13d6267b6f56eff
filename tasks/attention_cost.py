"""``/attention_cost``: what self-, cross- and joint attention cost in one of the profile's text-to-image models,
counted per layer and measured.

The ``model`` is a UNet role (``sd``, ``sd_t5``: N² self- plus N·M cross-attention on its coarser levels) or the
rectified-flow MM-DiT (``flow``: one (N + M)² joint attention per block, at full resolution). The analytic rows come
from walking the model (its config, on the meta device) at each asked resolution; the measured rows run the largest
layer of each kind through the materialised and the fused attention on the runtime's device
(``experiments.attention_cost`` explains both, how a joint layer is measured, and how peak memory is read).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from condition.flow_text import T5_MAX_SEQUENCE_LENGTH
from experiments.attention_cost import (
    CFG_BATCH,
    EXPECTED_SLOPE,
    AttentionLayer,
    lecture_numbers,
    mmdit_factor,
    mmdit_max_side,
    model_factor,
    slopes,
    step_totals,
    transformer_attention_layers,
    unet_attention_layers,
)
from experiments.attention_report import layer_table, measurement_table, plot_attention_cost, totals_table
from experiments.attention_timing import free_memory_bytes, measure_kinds
from models.loading.flow import load_role_flow
from models.loading.sd import load_role_sd, local_unet_config
from models.profiles import Profile
from models.runtime import Runtime
from pipelines.attention import PROCESSORS
from reporting.formats import human_bytes
from tasks import fields as F
from tasks.common import is_toy
from tasks.spec import EndpointSpec, Output, Params, Task, TaskContext
from tasks.text_models import TEXT_MODELS, text_model_roles

ROLE = "sd"  # the default model
FIELD = "resolutions"
MAX_RESOLUTIONS = 6
COUNTED_KINDS = {"unet": "UNet", "flow": "MM-DiT"}  # text-model kinds whose attention is walked here
WHY_FACTOR = {"unet": "the VAE's downsampling times the UNet's", "flow": "the VAE's downsampling times the "
              "transformer's patch"}


def attention_models(profile: Profile) -> tuple[str, ...]:
    """The profile's text-to-image roles with a UNet or an MM-DiT (``sd``, ``sd_t5``, ``flow``): PixArt-Σ's DiT is
    not walked here."""
    roles = tuple(r for r in text_model_roles(profile) if TEXT_MODELS[r].kind in COUNTED_KINDS)
    return roles or (ROLE,)


@dataclass(frozen=True)
class Geometry:
    """What a model allows of an image side: a multiple of ``factor``, at most ``max_side`` (None: unknown or
    uncapped), and why (for the message)."""

    factor: int | None
    max_side: int | None = None
    why: str = WHY_FACTOR["unet"]


def _local_flow_geometry(source: str) -> Geometry | None:
    """A local SD3-layout folder's factor and largest side from its configs (no weights); None for a hub id or an
    unreadable folder."""
    folder = Path(source)
    try:
        config = json.loads((folder / "transformer" / "config.json").read_text())
        vae = folder / "vae" / "config.json"
        scale = 2 ** (len(json.loads(vae.read_text())["block_out_channels"]) - 1) if vae.is_file() else 1
        return Geometry(mmdit_factor(config, scale), mmdit_max_side(config, scale), WHY_FACTOR["flow"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def known_geometry(profile: Profile, role: str = ROLE) -> Geometry:
    """The model's factor (and an MM-DiT's largest side) read from a local folder's configs, no weights loaded; a hub
    id's are unknown here (``factor=None``) and checked after loading instead."""
    source = profile.source(role)
    kind = TEXT_MODELS[role].kind if role in TEXT_MODELS else "unet"
    if not source:
        return Geometry(None, None, WHY_FACTOR.get(kind, WHY_FACTOR["unet"]))
    if kind == "flow":
        return _local_flow_geometry(source) or Geometry(None, None, WHY_FACTOR["flow"])
    configs = local_unet_config(source)
    try:
        return Geometry(model_factor(*configs) if configs is not None else None)
    except (KeyError, TypeError, ValueError):
        return Geometry(None)


def known_factor(profile: Profile, role: str = ROLE) -> int | None:
    """:func:`known_geometry`'s factor alone."""
    return known_geometry(profile, role).factor


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


def check_resolutions(resolutions: list[int], factor: int | None, max_pixels: int, *, max_side: int | None = None,
                      why: str = WHY_FACTOR["unet"]) -> None:
    """Each side a multiple of the model's ``factor`` (None: not known yet), at most ``max_side`` (an MM-DiT's
    positional embedding) and its square within ``max_pixels``."""
    for side in resolutions:
        if factor is not None and side % factor:
            raise ValueError(f"{FIELD}: {side} is not a multiple of {factor}, this model's factor ({why}); try "
                             f"{max(factor, side - side % factor)}")
        if max_side is not None and side > max_side:
            raise ValueError(f"{FIELD}: {side} is past the {max_side} px this model's positional embedding covers "
                             f"(pos_embed_max_size patches); ask for sides up to {max_side}")
        if side * side > max_pixels:
            largest = math.isqrt(max_pixels)
            raise ValueError(f"{FIELD}: {side}×{side} is {side * side} pixels, above this profile's cap of "
                             f"{max_pixels} (at most {largest}×{largest}; max_pixels in the profile's [limits], or "
                             "CONDLAB_MAX_PIXELS)")


def check_request(params: Params, profile: Profile) -> None:
    """The sides against the chosen model's factor and largest side (when known before loading) and the pixel cap."""
    geometry = known_geometry(profile, params.model)
    check_resolutions(params.resolutions, geometry.factor, profile.limits.max_pixels, max_side=geometry.max_side,
                      why=geometry.why)


def _sides_within(profile: Profile, candidates: tuple[int, ...], role: str = ROLE) -> list[int]:
    """The candidate sides this profile and model accept: multiples of the model's factor (SD's 64 when it is not
    known before loading) inside the pixel cap and the model's largest side."""
    geometry = known_geometry(profile, role)
    factor = geometry.factor or 64
    return [s for s in candidates if s % factor == 0 and s * s <= profile.limits.max_pixels
            and (geometry.max_side is None or s <= geometry.max_side)]


def _ladder(profile: Profile, role: str) -> list[int]:
    """The largest side the model and profile accept and its half and quarter (the multiples of the factor among
    them): sizes for a model whose positional embedding stops short of the usual ones (the toy MM-DiT: 8, 16, 32)."""
    geometry = known_geometry(profile, role)
    factor = geometry.factor or 64
    top = math.isqrt(profile.limits.max_pixels)
    if geometry.max_side is not None:
        top = min(top, geometry.max_side)
    top -= top % factor
    return sorted({side for side in (top // 4, top // 2, top) if side >= factor and side % factor == 0})


def _quick_resolutions(profile: Profile, role: str = ROLE) -> str:
    sides = _sides_within(profile, (32, 64, 128), role)[:2] or _ladder(profile, role)[-1:]
    return ", ".join(map(str, sides or [known_factor(profile, role) or 64]))


def default_resolutions(profile: Profile, role: str = ROLE) -> str:
    """The sides the form starts from for ``role``: the lecture's ladder (toy 32/64/128, full 256/512/1024) where
    the model takes at least two of them, else the largest side it takes with its half and quarter."""
    wanted = (32, 64, 128) if is_toy(profile) else (256, 512, 1024)
    for sides in (_sides_within(profile, wanted, role), _sides_within(profile, (32, 64, 128), role)[:2],
                  _ladder(profile, role)):
        if len(sides) > 1:
            return ", ".join(map(str, sides))
    return _quick_resolutions(profile, role)


ATTENTION_COST_SPEC = EndpointSpec(
    api_name="/attention_cost",
    summary="Self- vs cross-attention in a UNet, joint attention in an MM-DiT: per-layer matrix bytes and FLOPs, and "
            "measured time and peak memory of materialised vs fused (SDPA) attention",
    fields=(
        F.Field(FIELD, "custom", default_resolutions, "image sides in pixels (comma separated)",
                parser=lambda value, field: parse_resolutions(value),
                to_input=lambda sides: ", ".join(str(s) for s in sides), quick=_quick_resolutions,
                invalid=("", " , ", "abc", "256, x", "-256", "0", "12.5", "nan", "inf", "1, 2, 3, 4, 5, 6, 7"),
                extra={"text": True}),
        F.flag("measure", True, "measure time and peak memory on this device (materialised vs SDPA)"),
        F.choice("model", ROLE, attention_models, "model",
                 info="whose attention is counted: sd / sd_t5 (a UNet: N² self- and N·M cross-attention on its "
                      "coarser levels) or flow (an MM-DiT: one (N+M)² joint attention per block, text and image tokens "
                      "together)"),
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
    expected = ", ".join(f"{k} {EXPECTED_SLOPE[k]}" for k in fitted)
    parts = [f"**Fitted log–log slope of the largest matrix against the image tokens N** — {slope_text} (expected: "
             f"{expected}).",
             f"### Totals per image and per denoising step (CFG: batch {CFG_BATCH})", totals_table(totals)]
    if measurements:
        method = next((m.method for m in measurements if m.measured), "")
        joint = any(m.kind == "joint" for m in measurements)
        parts += [f"### Measured on {runtime_name} (batch 1, the largest layer of each kind; {len(PROCESSORS)} "
                  f"processors)", measurement_table(measurements),
                  f"<small>peak memory: {method or 'nothing measured'}; device free: "
                  f"{human_bytes(free) if free is not None else '?'}"
                  + ("; a joint layer is measured as one attention over its N + M tokens, what JointAttnProcessor2_0 "
                     "runs once each stream is projected" if joint else "") + "</small>"]
    parts += ["### Every attention layer (analytic, per batch element)", layer_table(layers)]
    return "\n\n".join(parts)


@dataclass(frozen=True)
class CountedModel:
    """A loaded model as /attention_cost reads it: its architecture, what it allows of a side, its text length and
    how to walk its attention layers at given resolutions."""

    architecture: str  # "UNet" or "MM-DiT"
    geometry: Geometry
    text_tokens: int
    text_note: str
    layers: Callable[[list[int]], list[AttentionLayer]]


def flow_text_tokens(flow) -> tuple[int, str]:
    """M of an SD3-layout model: CLIP's window (both towers share the positions) plus T5's (``max_sequence_length``
    capped by its tokenizer; 256 zeros stand in without T5), as ``condition.flow_text`` encodes a prompt."""
    clip = int(flow.tokenizer.model_max_length)
    t5 = (min(T5_MAX_SEQUENCE_LENGTH, int(flow.tokenizer_3.model_max_length)) if flow.text_encoder_3 is not None
          else T5_MAX_SEQUENCE_LENGTH)
    return clip + t5, f"{clip} CLIP + {t5} T5"


def counted_model(profile: Profile, runtime: Runtime, role: str) -> CountedModel:
    """Load ``role`` (a UNet or an MM-DiT role; call inside ``ctx.loading``) and bind its layer walk."""
    kind = TEXT_MODELS[role].kind if role in TEXT_MODELS else "unet"
    if kind not in COUNTED_KINDS:
        raise ValueError(f"model must be one of {', '.join(attention_models(profile))} (a UNet or an MM-DiT); got "
                         f"{role!r}")
    if kind == "flow":
        flow = load_role_flow(profile, runtime, role)
        config, scale = flow.transformer.config, flow.vae_scale_factor
        tokens, note = flow_text_tokens(flow)
        geometry = Geometry(mmdit_factor(config, scale), mmdit_max_side(config, scale), WHY_FACTOR["flow"])
        return CountedModel(COUNTED_KINDS[kind], geometry, tokens, note, lambda resolutions: (
            transformer_attention_layers(flow.transformer, resolutions, scale, tokens)))
    sd = load_role_sd(profile, runtime, role)
    tokens = int(sd.tokenizer.model_max_length) if sd.tokenizer is not None else 77
    return CountedModel(COUNTED_KINDS[kind], Geometry(model_factor(sd.unet.config, sd.vae_scale_factor)), tokens,
                        f"{tokens} text tokens", lambda resolutions: (
                            unet_attention_layers(sd.unet, resolutions, sd.vae_scale_factor, tokens)))


def run_attention_cost(params: Params, ctx: TaskContext) -> dict:
    profile, role = ctx.profile, params.model
    with ctx.loading(role):
        model = counted_model(profile, ctx.runtime, role)
    geometry = model.geometry
    # A hub model's factor and largest side are known now.
    check_resolutions(params.resolutions, geometry.factor, profile.limits.max_pixels, max_side=geometry.max_side,
                      why=geometry.why)
    with ctx.section("count"):
        layers = model.layers(params.resolutions)
    if not layers:
        raise ValueError(f"the '{role}' model of profile '{profile.name}' has no attention layers to count")
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
    model_id = profile.display_source(role)
    plot = plot_attention_cost(layers, measurements, free,
                               f"{model_id} ({model.architecture}): attention matrices, {model.text_note}")
    meta = ctx.metadata(
        model_id=model_id, model=role, architecture=model.architecture, model_factor=geometry.factor,
        max_side=geometry.max_side, text_tokens=model.text_tokens, text_tokens_are=model.text_note,
        cfg_batch=CFG_BATCH, slopes=fitted, expected_slopes={k: EXPECTED_SLOPE[k] for k in fitted}, totals=totals,
        layers=[x.as_row() for x in layers], measurements=[asdict(m) for m in measurements],
        device_free_bytes=free, lecture=lecture_numbers(),
    )
    table = report_markdown(layers, totals, measurements, fitted, ctx.runtime.name, free)
    return dict(plot=ctx.stamp(plot, models={role: model_id}), table=table, metadata=meta)


ATTENTION_COST = Task(ATTENTION_COST_SPEC, run_attention_cost)
