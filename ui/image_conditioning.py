"""The CLIP image-conditioning tab: layout only (``tasks.image_conditioning`` holds ``/image_conditioning``)."""

from __future__ import annotations

import gradio as gr

from models.loading.image import CLIP_ROLE, IP_ADAPTER_ROLE, VARIATIONS_ROLE
from models.profiles import Profile
from tasks.common import PHOTOS, toy_example
from tasks.image_conditioning import IMAGE_CONDITIONING
from ui.components import render_fields, render_guidance, render_outputs, render_rest
from ui.endpoint import wire

INTRO = """
CLIP puts matching images and texts near each other in one embedding space, so a diffusion model conditioned on
CLIP embeddings can be steered by a picture. **variations**: the model sees only the projected CLIP embedding of
your image (the unconditional branch is the zero embedding). **ip-adapter**: a text model with an extra image
cross-attention, weighted by *image scale* (0 = plain text-to-image). **cross-modal**: the image model is fed the
CLIP *text* embedding of the prompt (at the image embedding's length), or a spherical mix of image and text by
*mix* — the shared space and its modality gap, made visible. The JSON reports CLIP cosine similarities.
"""


def toy_examples() -> tuple[dict, ...]:
    # Variations of a scene, then the same image path fed half a text embedding, then text alone (mix = 1).
    common = dict(scale=3.0, num_images=2)
    return (dict(image=toy_example("two_shapes"), mode="variations", mix=0.0, seed=0, **common),
            dict(image=toy_example("large_circle"), mode="cross-modal", prompt="a red cross", mix=0.5, seed=1,
                 **common),
            dict(image=toy_example("triangle"), mode="cross-modal", prompt="a blue square", mix=1.0, seed=2, **common))


def photo_examples() -> tuple[dict, ...]:
    # The shipped cat photo: its variations, a text prompt plus the image, then half-way to a text embedding.
    cat = str(PHOTOS / "chelsea.png")
    return (dict(image=cat, mode="variations", seed=0),
            dict(image=cat, mode="ip-adapter", prompt="a cat astronaut on the moon", image_scale=0.6, scale=7.5,
                 seed=1),
            dict(image=cat, mode="cross-modal", prompt="a photo of a dog", mix=0.5, seed=2))


def build(profile: Profile) -> None:
    """Lay out the tab; the endpoint exists even when roles are missing (it then says which)."""
    endpoint = IMAGE_CONDITIONING.spec.bind(profile)
    gr.Markdown(INTRO)
    roles = (VARIATIONS_ROLE, IP_ADAPTER_ROLE, CLIP_ROLE)
    have = [f"`{r}`: `{profile.display_source(r)}`" for r in roles if profile.has(r)]
    lacking = [f"`{r}`" for r in roles if not profile.has(r)]
    gr.Markdown(("Models: " + ", ".join(have) if have else "No image-conditioning models in this profile.")
                + (f" · not in this profile: {', '.join(lacking)} (add them to the profile TOML)" if lacking else ""))
    with gr.Row():
        with gr.Column(scale=1):
            inputs = render_fields(endpoint, ["image", "mode", "prompt", "negative_prompt", "image_scale", "mix"])
            inputs |= render_guidance(endpoint)
            inputs |= render_fields(endpoint, ["steps"])
            with gr.Row():
                inputs |= render_fields(endpoint, ["width", "height"])
            inputs |= render_fields(endpoint, ["seed", "scheduler", "num_images"])
            inputs |= render_rest(endpoint, inputs)
            run = gr.Button("Generate", variant="primary", elem_id="img-run")
        with gr.Column(scale=2):
            outputs = render_outputs(IMAGE_CONDITIONING.spec, ["images", "clip_scores", "diagnostics",
                                                               "saturation", "metadata", "seed"])
    toy = profile.name == "toy"
    examples = (toy_examples() if profile.has(VARIATIONS_ROLE) else ()) if toy else photo_examples()
    wire(run, IMAGE_CONDITIONING, endpoint, inputs, outputs, examples=examples)
