"""The text-to-image tab: layout only (``tasks.text_to_image`` holds /text_to_image and /guidance_sweep)."""

from __future__ import annotations

import gradio as gr

from models.profiles import Profile
from tasks.text_to_image import GUIDANCE_SWEEP, ROLE, TEXT_TO_IMAGE
from ui.components import render_fields, render_guidance, render_outputs, render_rest
from ui.endpoint import wire

INTRO = """
Stable Diffusion sampled by this app's own loop. **CFG** pushes along the whole difference Δ = c − u between
the conditional and unconditional predictions; **Perp-CFG** pushes only across the unconditional direction
(plus η of the rest), which keeps colours from saturating at large scales. The plot shows ‖Δ∥‖, ‖Δ⊥‖ and how
much of the predicted image leaves the valid range at each step. Every PNG carries its parameters.
"""

TOY_EXAMPLES = (
    dict(prompt="a red circle", guidance="cfg", scale=7.0, seed=0, num_images=2, attention_token="red"),
    dict(prompt="a blue square on the left and a yellow circle", guidance="perp-cfg", scale=7.0, seed=1,
         num_images=2, attention_token="yellow"),
    dict(prompt="a green cross", guidance="none", scale=1.0, seed=2, num_images=2),
)
# With real weights: the same prompt at a high scale under CFG and under Perp-CFG, then the token map.
FULL_EXAMPLES = (
    dict(prompt="a photo of a red cat on a blue sofa", guidance="cfg", scale=12.0, seed=0),
    dict(prompt="a photo of a red cat on a blue sofa", guidance="perp-cfg", scale=12.0, seed=0),
    dict(prompt="a watercolor painting of a lighthouse at dusk", scale=7.5, seed=1, attention_token="lighthouse"),
)


def build(profile: Profile) -> None:
    """Lay out the tab; the endpoints exist even without an ``sd`` role (they then explain what is missing)."""
    t2i = TEXT_TO_IMAGE.spec.bind(profile)
    sweep = GUIDANCE_SWEEP.spec.bind(profile)
    gr.Markdown(INTRO)
    if not profile.has(ROLE):
        gr.Markdown(f"**This profile (`{profile.name}`) has no `{ROLE}` model**, so this tab cannot generate. "
                    f"Add `{ROLE} = \"hub-id-or-/path/to/folder\"` to the profile TOML.")
    else:
        gr.Markdown(f"Model: `{profile.display_source(ROLE)}` (loaded on first use).")

    with gr.Row():
        with gr.Column(scale=1):
            inputs = render_fields(t2i, ["prompt", "negative_prompt"])
            inputs |= render_guidance(t2i)
            inputs |= render_fields(t2i, ["steps"], steps={"elem_id": "t2i-steps"})
            with gr.Row():
                inputs |= render_fields(t2i, ["width", "height"])
            inputs |= render_fields(t2i, ["seed", "scheduler", "num_images", "attention_token"])
            inputs |= render_rest(t2i, inputs)
            run = gr.Button("Generate", variant="primary", elem_id="t2i-run")
        with gr.Column(scale=2):
            outputs = render_outputs(TEXT_TO_IMAGE.spec, ["images", "seed", "compare", "attention", "diagnostics",
                                                          "saturation", "metadata", "snippet"])

    with gr.Accordion("Guidance sweep: methods × scales at one seed, batched where the methods allow", open=False):
        with gr.Row():
            sweep_inputs = render_fields(sweep, ["scales"])
            sweep_inputs |= render_rest(sweep, {**inputs, **sweep_inputs})
            sweep_run = gr.Button("Run sweep")
        sweep_outputs = render_outputs(GUIDANCE_SWEEP.spec)

    # Toy examples are cached on first click: the toy model answers in about a second.
    wire(run, TEXT_TO_IMAGE, t2i, inputs, outputs, examples=TOY_EXAMPLES if profile.name == "toy" else FULL_EXAMPLES)
    wire(sweep_run, GUIDANCE_SWEEP, sweep, {**inputs, **sweep_inputs}, sweep_outputs)
