"""The ControlNet tab: layout only (``tasks.controlnet`` holds /controlnet, /controlnet_multi and /zero_conv)."""

from __future__ import annotations

import gradio as gr

from models.profiles import Profile
from tasks.common import PHOTOS, toy_example
from tasks.controlnet import CONTROLNET, CONTROLNET_MULTI, CONTROLS, ZERO_CONV, available_controls
from ui.components import render_fields, render_guidance, render_outputs, render_rest
from ui.endpoint import wire

INTRO = """
A **ControlNet** is a trainable copy of the UNet's encoder that reads a control map (edges, depth, a pose
skeleton) and adds its features to the UNet's skip connections. Here the map is computed with controlnet-aux
(or supplied as is), shown first, then fed to the same sampler loop and guidance rules as text-to-image.
`guidance_start/end` switch the ControlNet on only for that fraction of the schedule.
"""

ZERO_CONV_INTRO = """
The copy is joined to the UNet through **zero convolutions** (1×1, weights and bias 0). At initialisation every
residual is exactly zero, so the model *is* the pretrained UNet, bit for bit. Yet the zero convs' own gradients
are not zero: ∂L/∂W = Σ g ⊗ x (upstream gradient times the conv's input) and ∂L/∂b = Σ g. Only the copy behind
them gets no gradient on the first step; once the zero convs move, it does. Measured live on a fresh
`ControlNetModel.from_unet(unet)`:
"""


def toy_examples() -> tuple[dict, ...]:
    # Edges from one scene, colours from the prompt; then a prompt that contradicts the edges. The toy model
    # draws the prompt's shape where the map's shape is, at its size (scale 1), and anywhere at scale 0.
    common = dict(scale=4.0, num_images=2)
    return (dict(image=toy_example("two_shapes"), prompt="a blue cross and a yellow square", seed=0, **common),
            dict(image=toy_example("large_circle"), prompt="a magenta square", seed=1, **common),
            dict(image=toy_example("large_circle"), prompt="a magenta square", conditioning_scale=0.0, seed=1,
                 **common))


def photo_examples() -> tuple[dict, ...]:
    # The scikit-image photos shipped in assets/photos (CREDITS.md): edges, depth and pose of the same astronaut.
    photo = str(PHOTOS / "astronaut.png")
    return (dict(image=photo, control="canny", prompt="a bronze statue of an astronaut", seed=0),
            dict(image=photo, control="depth", prompt="an astronaut in a jungle, oil painting", seed=1),
            dict(image=photo, control="pose", prompt="a knight in armour", seed=2),
            dict(image=photo, control="canny", prompt="a bronze statue of an astronaut", guidance_end=0.4, seed=0))


def build(profile: Profile) -> None:
    one = CONTROLNET.spec.bind(profile)
    multi = CONTROLNET_MULTI.spec.bind(profile)
    zero = ZERO_CONV.spec.bind(profile)
    gr.Markdown(INTRO)
    have = available_controls(profile)
    missing = [c for c in CONTROLS if c not in have]
    toy = profile.name == "toy"
    if missing:
        why = " The toy world is flat shapes: there is no toy depth or pose model." if toy else ""
        gr.Markdown(f"**Profile `{profile.name}`** has ControlNets for: {', '.join(have) or 'none'}; "
                    f"not for {', '.join(missing)}.{why}")
    with gr.Row():
        with gr.Column(scale=1):
            inputs = render_fields(one, ["image", "control", "preprocess"])
            with gr.Row():
                inputs |= render_fields(one, ["low_threshold", "high_threshold"])
            inputs |= render_fields(one, ["preprocess_resolution"])
            with gr.Row():
                inputs |= render_fields(one, ["pose_hands", "pose_face"])
            inputs |= render_fields(one, ["prompt", "negative_prompt"])
            inputs |= render_guidance(one)
            inputs |= render_fields(one, ["conditioning_scale"])
            with gr.Row():
                inputs |= render_fields(one, ["guidance_start", "guidance_end"])
            inputs |= render_fields(one, ["steps"])
            with gr.Row():
                inputs |= render_fields(one, ["width", "height"])
            inputs |= render_fields(one, ["seed", "scheduler", "num_images"])
            inputs |= render_rest(one, inputs)
            run = gr.Button("Generate", variant="primary", elem_id="cn-run")
        with gr.Column(scale=2):
            outputs = render_outputs(CONTROLNET.spec)
    examples = toy_examples() if toy and "canny" in have else photo_examples() if not toy else ()
    wire(run, CONTROLNET, one, inputs, outputs, examples=examples)

    with gr.Accordion("Multi-ControlNet: two maps, each with its own scale and range", open=False):
        with gr.Row():
            multi_inputs = render_fields(multi, ["image_b"])
            for tag in ("a", "b"):
                with gr.Column():
                    multi_inputs |= render_fields(multi, [f"control_{tag}", f"conditioning_scale_{tag}",
                                                          f"guidance_start_{tag}", f"guidance_end_{tag}"])
            multi_inputs |= render_rest(multi, {**inputs, **multi_inputs})
        multi_run = gr.Button("Generate with both")
        multi_outputs = render_outputs(CONTROLNET_MULTI.spec)
    wire(multi_run, CONTROLNET_MULTI, multi, {**inputs, **multi_inputs}, multi_outputs)

    with gr.Accordion("Why zero convolutions", open=False):
        gr.Markdown(ZERO_CONV_INTRO)
        with gr.Row():
            zero_inputs = render_fields(zero, zero.names)
            zero_run = gr.Button("Measure")
        zero_outputs = render_outputs(ZERO_CONV.spec, ["table", "measured"])
    wire(zero_run, ZERO_CONV, zero, zero_inputs, zero_outputs)
