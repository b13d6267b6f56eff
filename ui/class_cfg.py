"""The CFG half of the "Classifier guidance vs CFG" tab: layout only (``tasks.class_cfg`` holds ``/class_cfg``,
``tasks.guidance_compare`` holds ``/cg_vs_cfg``)."""

from __future__ import annotations

import gradio as gr

from models.profiles import Profile
from tasks.class_cfg import CLASS_CFG
from tasks.guidance_compare import CG_VS_CFG
from ui.components import render_fields, render_guidance, render_outputs, render_rest
from ui.endpoint import wire

CFG_INTRO = """
### Classifier-free guidance on a DiT (AdaLN-zero)
**CFG** (Ho & Salimans, 2022) needs no classifier: one class-conditional model, trained with its label replaced by a
*null* label some of the time (label dropout), is asked twice per step — with the class and with the null label — and
ε̂ = ε(∅) + w·(ε(y) − ε(∅)). The model is a **DiT** (Peebles & Xie, 2023): a transformer on image patches whose blocks
take the class and the timestep through **AdaLN-zero** (scale, shift and a gate per block, computed from the
condition; the gates start at zero so every block starts as the identity). Every two-branch rule of the registry
applies. **clip_sample = unclipped-eps** shows a classic trap: DDIM clips x̂0 but keeps the model's ε, so the step
leaves the data manifold (on the toy DiT at w = 4 the samples turn to complementary-colour noise).
"""

COMPARE_INTRO = """
### Side by side: the same class, the same seed
Classifier guidance above vs CFG here, both read by the *same* noise-aware classifier at every step, and what each
step costs: classifier guidance pays a classifier forward **and a backward pass** per step on top of one model call;
CFG pays a second model row and no backward pass.
"""

TOY_CFG_EXAMPLES = (
    dict(class_name="red circle", guidance="cfg", scale=4.0, steps=25, seed=0, num_images=4),
    dict(class_name="blue triangle", guidance="cfg", scale=1.0, steps=25, seed=0, num_images=4),
    dict(class_name="blue triangle", guidance="cfg", scale=4.0, steps=25, seed=0, num_images=4,
         scheduler="ddim", clip_sample="unclipped-eps"),
)
IMAGENET_CFG_EXAMPLES = (
    dict(class_name="golden retriever", guidance="cfg", scale=4.0, steps=25, seed=0),
    dict(class_name="volcano", guidance="apg", scale=4.0, steps=25, seed=1),
)


def build_class_cfg(profile: Profile) -> None:
    endpoint = CLASS_CFG.spec.bind(profile)
    gr.Markdown(CFG_INTRO)
    with gr.Row():
        with gr.Column(scale=1):
            inputs = render_fields(endpoint, ["class_name", "class_id"])
            inputs |= render_guidance(endpoint)  # the selected method's parameters only, as on every tab
            inputs |= render_rest(endpoint, inputs)
            run = gr.Button("Sample with CFG", variant="primary", elem_id="ccfg-run")
        with gr.Column(scale=2):
            outputs = render_outputs(CLASS_CFG.spec, ["samples", "diagnostics", "saturation", "metadata", "seed"])
    toy = profile.name == "toy"
    wire(run, CLASS_CFG, endpoint, inputs, outputs, examples=TOY_CFG_EXAMPLES if toy else IMAGENET_CFG_EXAMPLES)


def build_compare(profile: Profile) -> None:
    endpoint = CG_VS_CFG.spec.bind(profile)
    gr.Markdown(COMPARE_INTRO)
    with gr.Row():
        with gr.Column(scale=1):
            inputs = render_fields(endpoint, endpoint.names)
            run = gr.Button("Compare", variant="primary", elem_id="cmp-run")
        with gr.Column(scale=2):
            outputs = render_outputs(CG_VS_CFG.spec, ["samples", "plot", "table", "metadata"])
    wire(run, CG_VS_CFG, endpoint, inputs, outputs)
