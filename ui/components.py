"""Gradio components made from endpoint fields and outputs (labels, bounds and defaults come from the spec)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence

import gradio as gr
from PIL import UnidentifiedImageError

from tasks.fields import Field
from tasks.spec import BoundEndpoint, EndpointSpec, Output

# Fewer choices than this are radio buttons; more make a dropdown.
RADIO_MAX = 6


class CompareSlider(gr.ImageSlider):
    """gr.ImageSlider whose empty value survives example caching: gradio writes an empty slider to the examples CSV as
    "" and reads it back with ``json.loads``, which fails on the click that should show the cached example. As a
    template of ImageSlider the page draws it with ImageSlider's own frontend."""

    is_template = True

    def read_from_flag(self, payload):  # noqa: ANN001, ANN201 - gradio's signature
        return None if payload in ("", None) else super().read_from_flag(payload)


class DataLinePlot(gr.LinePlot):
    """gr.LinePlot whose cached examples come back as plots: gradio writes the plot's data to the examples CSV as JSON
    and hands the string back unparsed, which the page cannot draw (and the tab stops responding). As a template of
    LinePlot the page draws it with LinePlot's own frontend."""

    is_template = True

    def read_from_flag(self, payload):  # noqa: ANN001, ANN201 - gradio's signature
        if payload in ("", None):
            return None
        return json.loads(payload) if isinstance(payload, str) else payload


def field_component(field: Field, **overrides) -> gr.components.Component:
    """The input component for ``field``: its label, default, bounds and step, unless ``overrides`` say otherwise.

    The component remembers the field's API name, so its own refusals name the parameter a client passed.
    """
    component = _make_component(field, **overrides)
    component.condlab_field = field.name
    return component


def _make_component(field: Field, **overrides) -> gr.components.Component:
    kind, widget = field.kind, field.widget
    if kind == "image":
        return image_upload(**{"value": field.default, "label": field.label, "format": "png", **overrides})
    kw = dict(label=field.label, info=field.info or None)
    if kind == "flag":
        return gr.Checkbox(**{"value": field.default, **kw, **overrides})
    if kind == "choice":
        if widget == "dropdown" or (not widget and len(field.choices) > RADIO_MAX):
            return gr.Dropdown(**{"choices": list(field.choices), "value": field.default, "filterable": True, **kw,
                                  **overrides})
        return gr.Radio(**{"choices": list(field.choices), "value": field.default, **kw, **overrides})
    if kind in ("number", "integer") and widget != "number" and _bounded(field):
        low, high = min(field.low, field.off) if field.off is not None else field.low, field.high
        # A slider needs min < max; with a cap equal to the floor it is shown fixed.
        return gr.Slider(**{"minimum": low, "maximum": max(high, low + (field.step or 1)), "value": field.default,
                            "step": field.step or (1 if kind == "integer" else 0.05), "interactive": high > low,
                            **kw, **overrides})
    if kind in ("number", "integer", "seed", "size"):
        # No rounding here (precision None): a fraction sent for a whole number is refused by the field, not
        # silently rounded, and large seeds stay exact integers.
        return gr.Number(**{"value": field.default, "precision": None, "step": field.step or 1, **kw, **overrides})
    if kind in ("custom", "text") and widget == "dropdown":
        return gr.Dropdown(**{"choices": list(field.choices), "value": field.default, "filterable": True,
                              "allow_custom_value": True, **kw, **overrides})
    placeholder = field.extra.get("placeholder")
    return gr.Textbox(**{"value": field.default, "lines": field.lines, "placeholder": placeholder, **kw, **overrides})


def _bounded(field: Field) -> bool:
    return field.low is not None and field.high is not None and math.isfinite(field.high) \
        and field.high - field.low <= 10_000


def render_fields(
    endpoint: BoundEndpoint, names: Sequence[str], **overrides: dict
) -> dict[str, gr.components.Component]:
    """Create the named fields' components here, in this order (``overrides[name]`` tweaks one)."""
    return {name: field_component(endpoint.field(name), **overrides.get(name, {})) for name in names}


def render_rest(endpoint: BoundEndpoint, placed: dict[str, gr.components.Component]) -> dict:
    """The endpoint's fields the layout did not place, rendered here in API order: a new field shows up
    without touching the layout."""
    return render_fields(endpoint, [name for name in endpoint.names if name not in placed])


def output_component(output: Output) -> gr.components.Component:
    kw = dict(label=output.label, elem_id=output.elem_id)
    if output.kind == "gallery":
        return gr.Gallery(format="png", columns=output.columns, **kw)
    if output.kind == "image":
        return gr.Image(type="pil", format="png", **kw)
    if output.kind == "json":
        return gr.JSON(**kw)
    if output.kind == "number":
        return gr.Number(precision=0, interactive=False, **kw)
    if output.kind == "code":
        return gr.Code(language="python", **kw)
    if output.kind == "markdown":
        return gr.Markdown(elem_id=output.elem_id)
    if output.kind == "slider":
        return CompareSlider(type="pil", format="png", **kw)
    if output.kind == "lineplot":
        x, y, colour = output.axes
        return DataLinePlot(x=x, y=y, color=colour, y_title=output.y_title or None, tooltip="all", height=260, **kw)
    raise ValueError(f"unknown output kind {output.kind!r}")


def render_outputs(spec: EndpointSpec, names: Sequence[str] | None = None) -> dict[str, gr.components.Component]:
    """Create output components here (all of the spec's, or the named ones, in that order)."""
    by_name = {o.name: o for o in spec.outputs}
    return {name: output_component(by_name[name]) for name in (names or list(by_name))}


def image_upload(**kwargs) -> gr.Image:
    """A filepath ``gr.Image`` that hands the upload over undecoded; its own open failures become clear errors.

    ``image_mode=None`` stops Gradio from decoding and converting non-RGB uploads itself: that would expand a
    decompression bomb before the task checks the header, and drop alpha instead of compositing it.
    Gradio still opens the header, so a non-image would otherwise reach the client as an anonymous "the app
    raised an exception". The wrapper is set on the instance because subclassing a component makes Gradio
    write a ``.pyi`` stub next to this module.
    """
    component = gr.Image(type="filepath", image_mode=None, **kwargs)
    decode = component.preprocess

    def preprocess(payload):
        try:
            return decode(payload)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            raise gr.Error("the upload could not be read as an image (PNG, JPEG, WebP…)") from None

    component.preprocess = preprocess
    return component


def harden_numeric_inputs(blocks: gr.Blocks) -> None:
    """Make every Number/Slider refuse non-numbers with a message that names the control.

    Gradio's own preprocessing compares and rounds the raw API value, so "nan", "12" or a float NaN/inf sent
    through the API raise TypeError/ValueError/OverflowError there, before any endpoint code can explain.
    """
    for block in blocks.blocks.values():
        if isinstance(block, gr.Number | gr.Slider) and not getattr(block, "_condlab_hardened", False):
            name = getattr(block, "condlab_field", None) or block.label or "a number input"
            block.preprocess = _numeric_preprocess(block, block.preprocess, name)
            block._condlab_hardened = True


def _numeric_preprocess(block: gr.Number | gr.Slider, decode: Callable, label: str) -> Callable:
    low, high = getattr(block, "minimum", None), getattr(block, "maximum", None)

    def preprocess(payload):
        if payload is not None and (isinstance(payload, bool) or not isinstance(payload, int | float)
                                    or not math.isfinite(payload)):
            raise gr.Error(f"{label} must be a finite number, got {str(payload)[:40]!r}")
        if payload is not None and low is not None and high is not None and not low <= payload <= high:
            raise gr.Error(f"{label} must be between {low:g} and {high:g}, got {payload!r}")
        return decode(payload)

    return preprocess


def render_guidance(endpoint: BoundEndpoint) -> dict[str, gr.components.Component]:
    """The guidance controls from the registry: the method, its scale, its own parameters (shown only while it is
    selected), its formula and paper, and the modifiers (interval, PAG, rescale, thresholding) in an accordion."""
    from guidance.rules import METHODS, MODIFIER_PARAMS

    names = set(endpoint.names)
    method_params = {p.name for m in METHODS.values() for p in m.params} & names
    components = render_fields(endpoint, [n for n in ("guidance", "scale") if n in names])
    chosen = endpoint.field("guidance").default if "guidance" in names else None
    own = {p.name for p in METHODS[chosen].params} if chosen in METHODS else method_params
    for name in [n for n in endpoint.names if n in method_params]:
        components[name] = field_component(endpoint.field(name), visible=name in own)
    formula = gr.Markdown(describe_method(chosen)) if chosen in METHODS else None
    modifiers = [p.name for p in MODIFIER_PARAMS if p.name in names]
    if modifiers:
        with gr.Accordion("interval, PAG, rescale, thresholding (on top of any method)", open=False):
            components |= render_fields(endpoint, modifiers)
    if "guidance" in names and formula is not None:
        params = [components[n] for n in endpoint.names if n in method_params]

        def switch(method: str):
            shown = {p.name for p in METHODS[method].params} if method in METHODS else set()
            visibility = [gr.update(visible=n in shown) for n in endpoint.names if n in method_params]
            return (*visibility, describe_method(method))

        components["guidance"].change(switch, components["guidance"], [*params, formula], api_visibility="private")
    return components


def describe_method(name: str | None) -> str:
    from guidance.rules import METHODS

    if name not in METHODS:
        return ""
    method = METHODS[name]
    lines = [f"**{method.label or method.name}**: {method.formula}"]
    if method.paper:
        lines.append(f"<small>{method.paper}" + (f"; defaults: {method.defaults_from}" if method.defaults_from
                                                 else "") + "</small>")
    return "\n\n".join(lines)
