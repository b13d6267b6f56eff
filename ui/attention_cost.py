"""The attention-cost tab: layout only (``tasks.attention_cost`` holds ``/attention_cost``)."""

from __future__ import annotations

import gradio as gr

from models.profiles import Profile
from tasks.attention_cost import ATTENTION_COST, default_resolutions
from ui.components import render_fields, render_outputs
from ui.endpoint import wire

INTRO = """
Every attention layer forms a matrix of weights between its queries and its keys. **Self-attention** compares each of
the N positions of a feature map with all N: an N × N matrix, so doubling the image side (4× the positions) costs
16× the memory. **Cross-attention** compares them with the M text tokens: N × M, only 4×. That is why Stable Diffusion
keeps attention off its finest feature maps, and why fused attention (`scaled_dot_product_attention`, Flash-style),
which never stores the matrix, changes the picture. An **MM-DiT** (SD3, the `flow` model) has neither: each block's
**joint attention** puts the image and text tokens in one sequence, one (N + M) × (N + M) matrix per layer, on every
block at full resolution. Below: every attention layer of the chosen model at the sizes you ask for, counted from one
shape-only pass through it, and the largest layer of each kind timed and measured on this device, materialised
(diffusers' `AttnProcessor`) vs fused (`AttnProcessor2_0`).
"""


def build(profile: Profile) -> None:
    endpoint = ATTENTION_COST.spec.bind(profile)
    gr.Markdown(INTRO)
    with gr.Row():
        inputs = render_fields(endpoint, endpoint.names)
        run = gr.Button("Count and measure", variant="primary", elem_id="ac-run")
    outputs = render_outputs(ATTENTION_COST.spec, ["plot", "table", "metadata"])
    wire(run, ATTENTION_COST, endpoint, inputs, outputs)
    # Each model starts from sizes it takes (the toy MM-DiT's positional embedding stops at 32 px).
    inputs["model"].change(lambda role: gr.update(value=default_resolutions(profile, role)), inputs["model"],
                           inputs["resolutions"], api_visibility="private")
