"""The attention-cost tab: layout only (``tasks.attention_cost`` holds ``/attention_cost``)."""

from __future__ import annotations

import gradio as gr

from models.profiles import Profile
from tasks.attention_cost import ATTENTION_COST
from ui.components import render_fields, render_outputs
from ui.endpoint import wire

INTRO = """
Every attention layer forms a matrix of weights between its queries and its keys. **Self-attention** compares each of
the N positions of a feature map with all N: an N × N matrix, so doubling the image side (4× the positions) costs
16× the memory. **Cross-attention** compares them with the M text tokens: N × M, only 4×. That is why Stable Diffusion
keeps attention off its finest feature maps, and why fused attention (`scaled_dot_product_attention`, Flash-style),
which never stores the matrix, changes the picture. Below: every attention layer of this profile's UNet at the
sizes you ask for, counted from one shape-only pass through the model, and the largest layer of each kind timed
and measured on this device, materialised (diffusers' `AttnProcessor`) vs fused (`AttnProcessor2_0`).
"""


def build(profile: Profile) -> None:
    endpoint = ATTENTION_COST.spec.bind(profile)
    gr.Markdown(INTRO)
    with gr.Row():
        inputs = render_fields(endpoint, endpoint.names)
        run = gr.Button("Count and measure", variant="primary", elem_id="ac-run")
    outputs = render_outputs(ATTENTION_COST.spec, ["plot", "table", "metadata"])
    wire(run, ATTENTION_COST, endpoint, inputs, outputs)
