"""The guidance-distillation tab: layout only (``tasks.distillation`` holds ``/distill_compare``)."""

from __future__ import annotations

import gradio as gr

from models.profiles import Profile
from tasks.distillation import DISTILL_COMPARE, ROLE
from ui.components import render_fields, render_outputs, render_rest
from ui.endpoint import wire

INTRO = """
CFG asks the model twice per step. **Guidance distillation** (Meng et al. 2023, stage one) trains a *student* to give
the guided prediction u + w (c − u) of its teacher in **one** call, with w as a condition: w goes through the same
sinusoidal embedding as the timestep and is added to it, so it reaches every block's scale and shift (AdaLN's
answer to a scalar condition; FLUX.1-dev's "guidance embedding" is the same idea). Here the student and its CFG
teacher draw the same seed at several w; the metadata counts the UNet rows each ran and times them. The 2D
playground offers `distilled` too, against exact scores.
"""


def build(profile: Profile) -> None:
    endpoint = DISTILL_COMPARE.spec.bind(profile)
    gr.Markdown(INTRO)
    if not profile.has(ROLE):
        gr.Markdown(f"**This profile (`{profile.name}`) has no `{ROLE}` student**: the comparison explains what is "
                    "missing when run.")
    with gr.Row():
        with gr.Column(scale=1):
            inputs = render_fields(endpoint, ["prompt", "scales"])
            inputs |= render_rest(endpoint, inputs)
            run = gr.Button("Draw teacher and student", variant="primary", elem_id="dc-run")
        with gr.Column(scale=2):
            outputs = render_outputs(DISTILL_COMPARE.spec)
    wire(run, DISTILL_COMPARE, endpoint, inputs, outputs)
