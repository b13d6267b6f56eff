"""The attention-binding tab: layout only (``tasks.attention_binding`` holds ``/attention_binding``)."""

from __future__ import annotations

import gradio as gr

from models.profiles import Profile
from tasks.attention_binding import ATTENTION_BINDING
from ui.components import render_fields, render_outputs
from ui.endpoint import wire

INTRO = """
Cross-attention is how a word reaches pixels: each position of a feature map spreads its attention over the text
tokens. If "red" binds to the red object, the attention that goes to "red" should sit on that object. Here every
colour and shape word of the prompt is followed through every cross-attention layer at every denoising step, and its
attention mass is split into **its own object**, **the other object** and **the background**. A word counts as
**bound** when more of its mass lies on its own object than on the other.

A generated sample has no ground-truth mask, so in the toy world each object's mask is read off the sample itself:
its pixels of the named colour (the world's six colours are saturated and far apart); only when the sample shows
(almost) none of that colour does the position the prompt names ("on the left"; the other object then sits on the
right) stand in. The maps show the own object's mask outlined and the other's dashed. A real model has no such masks:
there, each word's share of the attention and its maps only.
"""

TOY_EXAMPLES = [
    {"prompt": "a red circle on the left and a blue square", "scale": 4.0},
    {"prompt": "a yellow triangle at the top and a green cross", "scale": 7.0},
    {"prompt": "a magenta square and a cyan circle", "scale": 1.0},
]


def build(profile: Profile) -> None:
    endpoint = ATTENTION_BINDING.spec.bind(profile)
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=2):
            inputs = render_fields(endpoint, ["prompt", "model"])
        with gr.Column(scale=3):
            inputs |= render_fields(endpoint, ["scale", "steps", "seed", "num_images"])
    run = gr.Button("Sample and measure binding", variant="primary", elem_id="ab-run")
    outputs = render_outputs(ATTENTION_BINDING.spec, ["maps", "plot", "table", "metadata"])
    wire(run, ATTENTION_BINDING, endpoint, inputs, outputs, examples=TOY_EXAMPLES if profile.name == "toy" else ())
