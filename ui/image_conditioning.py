"""The CLIP image-conditioning tab: image variations, IP-Adapter and cross-modal (text in an image model's slot).

Endpoint ``/image_conditioning``; its parameter names are the public API. Every input is checked
against the profile's limits before any model is loaded; the CLIP read-outs use the ``clip`` role.
"""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from condition.control import sanitize_image
from guidance.rules import BASES, RULE_NAMES
from models.image_loading import CLIP_ROLE, IP_ADAPTER_ROLE, VARIATIONS_ROLE, load_clip, load_image_variations
from models.image_loading import load_ip_adapter as load_ipa
from models.profiles import ROOT, Profile
from models.runtime import pick_runtime
from pipelines.image_conditioning import MODES, ImageParams, clip_scores, cross_modal, ip_adapter, variations
from pipelines.metadata import Timings, attach_metadata, run_metadata
from pipelines.plots import plot_diagnostics
from pipelines.schedulers import SCHEDULERS
from pipelines.text_to_image import to_pil
from ui.common import (
    GPU_QUEUE,
    SIZE_MULTIPLE,
    choice,
    default_side,
    guarded,
    image_upload,
    images_slider,
    number,
    on_gpu,
    rule_metadata,
    sampling_params,
    step_progress,
    toy_example,
)

PHOTO = ROOT / "assets" / "photos" / "chelsea.png"

MAX_IMAGE_SCALE = 1.5
MODE_ROLES = {
    "variations": (VARIATIONS_ROLE,), "cross-modal": (VARIATIONS_ROLE,), "ip-adapter": ("sd", IP_ADAPTER_ROLE),
}

INTRO = """
CLIP puts matching images and texts near each other in one embedding space, so a diffusion model conditioned on
CLIP embeddings can be steered by a picture. **variations**: the model sees only the projected CLIP embedding of
your image (the unconditional branch is the zero embedding). **ip-adapter**: a text model with an extra image
cross-attention, weighted by *image scale* (0 = plain text-to-image). **cross-modal**: the image model is fed the
CLIP *text* embedding of the prompt (at the image embedding's length), or a spherical mix of image and text by
*mix* — the shared space and its modality gap, made visible. The JSON reports CLIP cosine similarities.
"""


def _missing_roles(profile: Profile, mode: str) -> list[str]:
    return [r for r in MODE_ROLES[mode] if not profile.has(r)]


def make_endpoint(profile: Profile) -> Callable:
    """The ``/image_conditioning`` function bound to ``profile`` (usable without launching the app)."""
    limits = profile.limits

    @guarded
    @on_gpu
    def image_conditioning(
        image=None,
        mode: str = "variations",
        prompt: str = "",
        negative_prompt: str = "",
        image_scale: float = 0.6,
        mix: float = 0.0,
        guidance: str = "cfg",
        scale: float = 3.0,
        eta: float = 0.0,
        basis: str = "uncond",
        rescale: float = 0.0,
        steps: int = 25,
        width: int = 512,
        height: int = 512,
        seed: int = -1,
        scheduler: str = "ddim",
        num_images: int = 1,
        progress=gr.Progress(),
    ):
        params = ImageParams(
            mode=choice(mode, "mode", MODES),
            image_scale=number(image_scale, "image_scale", 0, MAX_IMAGE_SCALE),
            mix=number(mix, "mix", 0, 1),
            **sampling_params(
                limits, prompt=prompt, negative_prompt=negative_prompt, guidance=guidance, scale=scale, eta=eta,
                basis=basis, rescale=rescale, steps=steps, width=width, height=height, seed=seed,
                scheduler=scheduler, num_images=num_images,
            ),
        )
        missing = _missing_roles(profile, params.mode)
        if missing:
            raise ValueError(f"mode {params.mode!r} needs the {' and '.join(repr(r) for r in missing)} model(s), "
                             f"which the profile '{profile.name}' does not name; add them to the profile TOML")
        text_only = params.mode == "cross-modal" and params.mix == 1.0 and image is None
        picture = None if text_only else sanitize_image(image, max_pixels=limits.max_upload_pixels)
        if params.mode == "cross-modal" and params.mix > 0 and not params.prompt.strip():
            raise ValueError("cross-modal mode with mix > 0 needs a prompt: it is the text side of the mix")
        if params.mode == "ip-adapter" and not params.prompt.strip() and params.image_scale == 0:
            gr.Warning("image_scale 0 with an empty prompt: the image has no effect")

        runtime = pick_runtime()
        timings = Timings()
        common = dict(rule=params.rule, steps=params.steps, width=params.width, height=params.height,
                      seed=params.seed, num_images=params.num_images, scheduler=params.scheduler,
                      callback=step_progress(progress))
        clip = None
        with timings.section("load"):
            if profile.has(CLIP_ROLE):
                clip = load_clip(profile, runtime)
            if params.mode == "ip-adapter":
                ipa = load_ipa(profile, runtime)
                model_id = f"{ipa.sd.source} + {ipa.source}"
            else:
                vsd = load_image_variations(profile, runtime)
                model_id = vsd.source
        with timings.section("sample"):
            if params.mode == "ip-adapter":
                out = ip_adapter(ipa, picture, params.prompt, image_scale=params.image_scale,
                                 negative_prompt=params.negative_prompt, **common)
            elif params.mode == "cross-modal":
                if params.mix > 0 and clip is None:
                    raise ValueError(f"cross-modal mode with mix > 0 needs the '{CLIP_ROLE}' model for the text "
                                     f"embedding; add {CLIP_ROLE} = \"...\" to the profile TOML")
                out = cross_modal(vsd, clip, picture, params.prompt, params.mix, **common)
            else:
                out = variations(vsd, picture, **common)
        images = [to_pil(img) for img in out.images]
        with timings.section("clip"):
            if clip is not None:
                scores = clip_scores(clip, images, picture, params.prompt)
            else:
                scores = {"note": f"the profile names no '{CLIP_ROLE}' model, so nothing was measured"}
        public = params.as_dict()
        notes = []
        if params.mode != "ip-adapter" and params.negative_prompt:
            notes.append("negative_prompt is ignored here: the image model's unconditional branch is the zero "
                         "embedding it was trained with")
        notes += [f"prompt truncated; dropped: {t!r}" for t in out.truncated if t]
        rule = params.rule
        meta = run_metadata(
            public, model_id=model_id, runtime=runtime.name, timings=timings,
            rule=rule_metadata(rule),
            clip=scores, notes=notes,
        )
        gallery = [(attach_metadata(img, public, {"model_id": model_id, "index": i}),
                    f"{params.mode} · seed {params.seed} · #{i}") for i, img in enumerate(images)]
        plot = plot_diagnostics(out.result, f"{params.mode}: {rule.name}, w = {rule.scale:g}")
        return gallery, scores, plot, meta, params.seed

    return image_conditioning


def build(profile: Profile) -> None:
    """Lay out the tab; the endpoint exists even when roles are missing (it then says which)."""
    fn = make_endpoint(profile)
    limits = profile.limits
    size = default_side(profile, VARIATIONS_ROLE)
    gr.Markdown(INTRO)
    have = [f"`{r}`: `{profile.source(r)}`" for r in (VARIATIONS_ROLE, IP_ADAPTER_ROLE, CLIP_ROLE) if profile.has(r)]
    lacking = [f"`{r}`" for r in (VARIATIONS_ROLE, IP_ADAPTER_ROLE, CLIP_ROLE) if not profile.has(r)]
    gr.Markdown(("Models: " + ", ".join(have) if have else "No image-conditioning models in this profile.")
                + (f" · not in this profile: {', '.join(lacking)} (add them to the profile TOML)" if lacking else ""))
    default_mode = "variations" if profile.has(VARIATIONS_ROLE) or not profile.has(IP_ADAPTER_ROLE) else "ip-adapter"
    toy = profile.name == "toy"
    with gr.Row():
        with gr.Column(scale=1):
            # The toy models only know the shapes world, so in toy the default input is a world scene.
            image = image_upload(value=toy_example("two_shapes") if toy else str(PHOTO), label="image", format="png")
            mode = gr.Radio(list(MODES), value=default_mode, label="mode")
            prompt = gr.Textbox("", label="prompt (ip-adapter / cross-modal; also scored by CLIP)", lines=2)
            negative = gr.Textbox("", label="negative prompt (ip-adapter only)")
            image_scale = gr.Slider(0, MAX_IMAGE_SCALE, value=0.6, step=0.05, label="image scale (ip-adapter)")
            mix = gr.Slider(0, 1, value=0.5, step=0.05, label="mix: 0 = image embedding, 1 = text (cross-modal)")
            guidance = gr.Radio(list(RULE_NAMES), value="cfg", label="guidance")
            scale = gr.Slider(0, 30, value=3.0, step=0.5, label="scale w")
            eta = gr.Slider(0, 1, value=0.0, step=0.05, label="η: Perp-CFG's parallel weight")
            basis = gr.Radio(list(BASES), value="uncond", label="Perp-CFG basis")
            rescale = gr.Slider(0, 1, value=0.0, step=0.05, label="rescale φ")
            steps = gr.Slider(1, limits.max_steps, value=min(25, limits.max_steps), step=1, label="steps")
            with gr.Row():
                width = gr.Number(size, precision=0, step=SIZE_MULTIPLE, label="width (multiple of 8)")
                height = gr.Number(size, precision=0, step=SIZE_MULTIPLE, label="height (multiple of 8)")
            seed = gr.Number(0, precision=0, label="seed (−1 = random)")
            scheduler = gr.Dropdown(list(SCHEDULERS), value="ddim", label="scheduler")
            num_images = images_slider(limits)
            run = gr.Button("Generate", variant="primary", elem_id="img-run")
        with gr.Column(scale=2):
            gallery = gr.Gallery(label="images (PNG, parameters embedded)", format="png", columns=2,
                                 elem_id="img-gallery")
            scores = gr.JSON(label="CLIP cosine similarities")
            plot = gr.Image(label="per-step diagnostics", type="pil", format="png")
            meta = gr.JSON(label="metadata")
            seed_used = gr.Number(label="seed used", precision=0, interactive=False)
    inputs = [image, mode, prompt, negative, image_scale, mix, guidance, scale, eta, basis, rescale, steps, width,
              height, seed, scheduler, num_images]
    outputs = [gallery, scores, plot, meta, seed_used]
    if toy and profile.has(VARIATIONS_ROLE):
        # Variations of a scene, then the same image path fed half a text embedding, then text alone (mix = 1).
        n = min(25, limits.max_steps)

        def row(name: str, mode_: str, text: str, mix_: float, seed: int) -> list:
            return [toy_example(name), mode_, text, "", 0.6, mix_, "cfg", 3.0, 0.0, "uncond", 0.0, n, size, size,
                    seed, "ddim", 2]

        gr.Examples(
            [row("two_shapes", "variations", "", 0.0, 0), row("large_circle", "cross-modal", "a red cross", 0.5, 1),
             row("triangle", "cross-modal", "a blue square", 1.0, 2)],
            inputs, outputs, fn=fn, cache_examples=True, cache_mode="lazy",
            label="examples (cached after the first click)",
        )
    run.click(fn, inputs, outputs, api_name="image_conditioning", **GPU_QUEUE)
