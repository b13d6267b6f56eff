"""The AdaLN-zero tab: layout only (``tasks.adaln_zero`` holds ``/adaln_zero``)."""

from __future__ import annotations

import gradio as gr

from models.profiles import Profile
from tasks.adaln_zero import ADALN_ZERO
from ui.components import render_fields, render_outputs, render_rest
from ui.endpoint import wire

INTRO = """
A DiT block is conditioned by **adaptive layer norm**: one linear layer reads the timestep + class embedding c and
regresses six vectors, m = W·SiLU(c) + b = [shift, scale, gate] for the attention and again for the MLP. The shifts
and scales modulate the normalised tokens; the **gates multiply each residual branch**:
h = x + gate_msa ⊙ Attn(…), out = h + gate_mlp ⊙ MLP(…). **AdaLN-Zero** (Peebles & Xie 2023, §3.2) starts W and b
at zero, so every gate is 0 and the block is *exactly* the identity, while the gate rows of W still get the gradient
(∂L/∂m)ᵀ SiLU(c) with ∂L/∂gate = Σ ∂L/∂out ⊙ branch(x). Everything the gates hide (attention, MLP, the embedding)
gets exactly zero gradient on the first step and starts learning once the gates have moved: ControlNet's zero
convolutions again, inside every block. Measured live on a fresh diffusers `BasicTransformerBlock` (the block
`DiTTransformer2DModel` stacks), against the same block with diffusers' default initialisation:
"""


def build(profile: Profile) -> None:
    endpoint = ADALN_ZERO.spec.bind(profile)
    gr.Markdown(INTRO)
    with gr.Row():
        inputs = render_fields(endpoint, ["seed", "heads", "head_dim"])
    with gr.Row():
        inputs |= render_fields(endpoint, ["tokens", "sgd_steps", "lr"])
        inputs |= render_rest(endpoint, inputs)
    run = gr.Button("Measure", variant="primary", elem_id="az-run")
    outputs = render_outputs(ADALN_ZERO.spec, ["plot", "table", "measured"])
    wire(run, ADALN_ZERO, endpoint, inputs, outputs)
