"""The 2D guidance playground tab: layout only (``tasks.playground`` holds ``/playground``)."""

from __future__ import annotations

import gradio as gr

from models.profiles import Profile
from tasks.playground import PLAYGROUND
from ui.components import render_fields, render_guidance, render_outputs
from ui.endpoint import wire

INTRO = """
A labelled 2D Gaussian mixture has **closed-form** noisy scores, so every guidance rule here is exact.
The contours show the *sharpened conditional* p(x) p(c|x)^w at t = 0: what CFG with scale w and classifier
guidance with scale s = w aim at. Watch the share of samples in the target class rise with w while each mode
narrows, and compare how Perp-CFG (guidance only across the unconditional score) spends the same w.
"""


def build(profile: Profile) -> None:
    endpoint = PLAYGROUND.spec.bind(profile)
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=1):
            inputs = render_guidance(endpoint)
            inputs |= render_fields(endpoint, [n for n in endpoint.names if n not in inputs])
            run = gr.Button("Sample", variant="primary", elem_id="pg-run")
        with gr.Column(scale=2):
            outputs = render_outputs(PLAYGROUND.spec)
    wire(run, PLAYGROUND, endpoint, inputs, outputs)
