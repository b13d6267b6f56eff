"""The p_uncond tab: layout only (``tasks.puncond`` holds ``/p_uncond``)."""

from __future__ import annotations

import gradio as gr

from models.profiles import Profile
from tasks.puncond import PUNCOND, measured_table
from ui.components import render_fields, render_outputs
from ui.endpoint import wire

INTRO = """
Classifier-free guidance needs **two** predictions from one network: ε(x, t, c) and ε(x, t, ∅). Training drops the
label to the null class with probability **p_uncond**. Here small networks of the 2D mixture were trained with
p ∈ {0, 0.05, 0.1, 0.2, 0.5, 1} (same steps, same data, same initial weights per seed) and are compared with the
**exact** scores: each branch's ε error, and CFG with the learned branches beside CFG with the exact ones from the
same noise, through the same sampler loop as the playground. p = 0 never trains the unconditional branch; p = 1
never trains the conditional one.
"""


def build(profile: Profile) -> None:
    endpoint = PUNCOND.spec.bind(profile)
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=1):
            inputs = render_fields(endpoint, endpoint.names)
            run = gr.Button("Sample", variant="primary", elem_id="pu-run")
        with gr.Column(scale=3):
            outputs = render_outputs(PUNCOND.spec)
    with gr.Accordion("Measured over every p (3 training seeds each)", open=False):
        gr.Markdown(measured_table())
    wire(run, PUNCOND, endpoint, inputs, outputs)
