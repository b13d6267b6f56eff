"""The classifier-guidance tab: layout only (``tasks.classifier_guidance`` holds ``/classifier_guidance``)."""

from __future__ import annotations

import gradio as gr

from models.loading.adm import CHOICES, role_spec
from models.profiles import Profile
from tasks.classifier_guidance import CLASSIFIER_GUIDANCE, model_choices, uses_world_classes
from ui.components import render_fields, render_outputs
from ui.endpoint import wire

INTRO = """
**Classifier guidance** (Dhariwal & Nichol, 2021): at every step a *noise-aware* classifier p(y | x_t), trained on
noisy images, pushes the sample toward class y by s·∇ log p(y | x_t). The plot shows the target's log-probability
over the steps and the classifier's top-5. **compare_clean** samples the same seed guided instead by a standard
ImageNet ResNet-50 looking at the predicted x̂₀: standard classifiers do poorly on noisy inputs, which is why the
paper trains a noise-aware one.
"""

TOY_INTRO = """
**Classifier guidance** (Dhariwal & Nichol, 2021) in the toy shapes world. The base model is the toy UNet with the
*empty prompt*: trained with caption dropout, that branch is an unconditional model of the whole world. At every step
a *noise-aware* (colour, shape) classifier p(y | x_t), trained on noised images at every t, pushes the sample toward
class y by s·∇ log p(y | x_t). **compare_clean** samples the same seed guided instead by a classifier of the same
architecture trained on *clean images only*, looking at the predicted x̂₀.
"""

# Cached on first click; compare_clean puts the noise-aware and clean-guided rows side by side.
TOY_EXAMPLES = (
    dict(class_name="red circle", classifier_scale=10.0, steps="ddim25", seed=0, num_images=4, compare_clean=True),
    dict(class_name="cyan cross", classifier_scale=3.0, steps="ddim25", seed=1, num_images=4, compare_clean=True),
    dict(class_name="yellow triangle", classifier_scale=10.0, steps="50", sampler="ddpm", seed=2, num_images=4),
)


IMAGENET_EXAMPLES = (
    dict(class_name="golden retriever", model="64x64", classifier_scale=1.0, steps="ddim25", seed=0,
         compare_clean=True),
    dict(class_name="volcano", model="64x64", classifier_scale=4.0, steps="ddim25", seed=1, num_images=2),
    dict(class_name="tabby", model="256x256-uncond", classifier_scale=10.0, steps="ddim25", seed=2),
)


def build(profile: Profile) -> None:
    endpoint = CLASSIFIER_GUIDANCE.spec.bind(profile)
    toy = uses_world_classes(profile)
    gr.Markdown(TOY_INTRO if toy else INTRO)
    if not toy:
        try:
            backing = [f"- **{c}**: `{role_spec(profile, 'adm_diffusion', c).file_name}` + "
                       f"`{role_spec(profile, 'adm_classifier', c).file_name}`" for c in CHOICES]
            gr.Markdown("Checkpoints behind each model choice (loaded on first use):\n" + "\n".join(backing))
        except ValueError as e:  # a broken profile entry should not take the whole app down
            gr.Markdown(f"**This profile's ADM roles are invalid:** {e}")
    with gr.Row():
        with gr.Column(scale=1):
            inputs = render_fields(endpoint, endpoint.names)
            run = gr.Button("Sample", variant="primary", elem_id="cg-run")
        with gr.Column(scale=2):
            outputs = render_outputs(CLASSIFIER_GUIDANCE.spec, ["samples", "log_prob", "top5", "metadata", "seed"])
    wire(run, CLASSIFIER_GUIDANCE, endpoint, inputs, outputs, examples=TOY_EXAMPLES if toy else IMAGENET_EXAMPLES)
    # The paper's setting differs per model (s = 10 for the unconditional 256×256 model).
    choices = model_choices(profile)
    inputs["model"].change(lambda m: gr.update(value=choices[m].default_scale) if m in choices else gr.update(),
                           inputs["model"], inputs["classifier_scale"], api_visibility="private")
