"""The classifier-guidance tab (endpoint ``/classifier_guidance``).

ImageNet (ADM + noise-aware classifier) in the ``full`` profile; in a profile with the
``classifier_noise_aware`` role (``toy``) the toy UNet's empty-prompt branch guided by the shapes
world's (colour, shape) classifiers. Same endpoint, same parameters.
"""

from __future__ import annotations

import gradio as gr
from PIL import Image

from condition.labels import class_id_in, display_name, display_names, resolve_class
from models.adm_loading import CHOICES, ModelChoice, load_adm_pair, role_spec
from models.loading import sd_native_size
from models.profiles import Profile
from models.runtime import pick_runtime
from models.toy_classifier import class_names_in
from pipelines.classifier_guidance import (
    SAMPLERS,
    check_scale,
    classifier_guided_sample,
    parse_steps,
    plot_log_prob,
)
from pipelines.metadata import Timings, attach_metadata, run_metadata
from pipelines.toy_guidance import load_toy_guided
from ui.common import GPU_QUEUE, choice, guarded, images_slider, number, on_gpu, resolve_seed, step_progress

MAX_SCALE = 20.0
DEFAULT_CLASS = 207  # golden retriever: a class every ImageNet model knows well

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
TOY_CHOICES = {"toy": ModelChoice("", "", 10.0, "toy 32×32 UNet (empty prompt) + noise-aware world classifier")}


def _to_pil(image) -> Image.Image:
    array = (image.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
    return Image.fromarray(array)


def build(profile: Profile) -> None:
    limits = profile.limits
    # A profile that ships world classifiers guides its own UNet; otherwise ImageNet ADM.
    toy = profile.has("classifier_noise_aware")
    choices = TOY_CHOICES if toy else CHOICES
    names = class_names_in(profile.source("classifier_noise_aware")) if toy else display_names()
    default_name = names[0] if toy else display_name(DEFAULT_CLASS)

    @guarded
    @on_gpu
    def classifier_guidance(
        class_name: str = default_name,
        class_id: int | None = -1,
        model: str = next(iter(choices)),
        classifier_scale: float = 1.0,
        steps: str = "ddim25",
        sampler: str = "ddim",
        seed: int = 0,
        num_images: int = 1,
        compare_clean: bool = False,
        progress=gr.Progress(),
    ):
        # Everything is checked before any model is loaded or any step taken.
        target = class_id_in(class_name, class_id, names) if toy else resolve_class(class_name, class_id)
        model = choice(model, "model", tuple(choices))
        scale = check_scale(classifier_scale, MAX_SCALE)
        spec = None if toy else role_spec(profile, "adm_diffusion", model)
        respacing, _ = parse_steps(steps, int(spec.flags.get("diffusion_steps", 1000)) if spec else 1000,
                                   limits.guided_steps)  # fmt: skip
        sampler = choice(sampler, "sampler", SAMPLERS)
        seed = resolve_seed(seed)
        n = number(num_images, "num_images", 1, limits.max_images, integer=True)
        if not isinstance(compare_clean, bool):
            raise ValueError(f"compare_clean must be true or false, got {str(compare_clean)[:40]!r}")
        size = int(spec.flags["image_size"]) if spec else (sd_native_size(profile.source("sd")) or 0)
        if size * size > limits.max_pixels:
            raise ValueError(f"the {model} model makes {size}×{size} images; this server allows {limits.max_pixels} "
                             "pixels per image")

        runtime = pick_runtime()
        timings = Timings()
        with timings.section("load"):
            pair = load_toy_guided(profile, runtime) if toy else load_adm_pair(profile, model, runtime)
        with timings.section("sample"):
            # compare_clean uses the pair's own clean classifier, or (ImageNet) ResNet-50 on x̂₀.
            result = classifier_guided_sample(
                pair, class_id=target, classifier_scale=scale, steps=respacing, sampler=sampler, seed=seed,
                num_images=n, compare_clean=compare_clean, runtime=runtime,
                callback=step_progress(progress, "guided by the noise-aware classifier"),
                clean_callback=step_progress(progress, f"guided by the {pair.clean_label} on x̂₀"),
                max_steps=limits.guided_steps,
            )
        label = names[target] if toy else display_name(target)
        public = dict(class_name=label, class_id=target, model=model, classifier_scale=scale,
                      steps=respacing, sampler=sampler, seed=seed, num_images=n, compare_clean=compare_clean)
        gallery = []
        for run in (result.guided, result.clean):
            if run is None:
                continue
            for i, image in enumerate(run.images):
                png = attach_metadata(_to_pil(image), public, {"guide": run.guide, "index": i,
                                                               "sources": result.params["sources"]})
                gallery.append((png, f"{run.guide}-guided · seed {seed} · #{i}"))
        plot = plot_log_prob(result, f"{label} · s = {scale:g} · {sampler} {respacing}")
        meta = run_metadata(public, model_id=pair.diffusion_source, runtime=runtime.name, timings=timings,
                            classifier_id=pair.classifier_source, **result.metadata())
        return gallery, plot, meta, seed

    gr.Markdown(TOY_INTRO if toy else INTRO)
    if not toy:
        try:
            backing = [f"- **{c}**: `{role_spec(profile, 'adm_diffusion', c).file_name}` + "
                       f"`{role_spec(profile, 'adm_classifier', c).file_name}`" for c in CHOICES]
            gr.Markdown("Checkpoints behind each model choice (loaded on first use):\n" + "\n".join(backing))
        except ValueError as e:  # a broken profile entry should not take the whole app down
            gr.Markdown(f"**This profile's ADM roles are invalid:** {e}")
    first = next(iter(choices))
    with gr.Row():
        with gr.Column(scale=1):
            class_name = gr.Dropdown(list(names), value=default_name, filterable=True, allow_custom_value=True,
                                     label="class (colour, shape)" if toy else "ImageNet class (type to search)")
            class_id = gr.Number(-1, precision=0, label=f"or class id 0–{len(names) - 1} (−1 = use the name)")
            model = gr.Radio(list(choices), value=first, label="model",
                             info=" · ".join(f"{k}: {v.description}" for k, v in choices.items()))
            scale = gr.Slider(0, MAX_SCALE, value=choices[first].default_scale, step=0.1, label="classifier scale s")
            steps = gr.Textbox(f"ddim{min(25, limits.guided_steps)}",
                               label='steps (respacing: "250", "100", "ddim25", "50" …)')
            sampler = gr.Radio(list(SAMPLERS), value="ddim", label="sampler")
            seed = gr.Number(0, precision=0, label="seed (−1 = random)")
            num_images = images_slider(limits)
            clean = "the clean world classifier" if toy else "a clean ResNet-50"
            compare_clean = gr.Checkbox(False, label=f"compare with {clean} guiding on x̂₀ (same seed)")
            run = gr.Button("Sample", variant="primary", elem_id="cg-run")
        with gr.Column(scale=2):
            gallery = gr.Gallery(label="samples (PNG, parameters embedded)", format="png", columns=4,
                                 elem_id="cg-gallery")
            plot = gr.Image(label="log p(target) and top-5 over the steps", type="pil", format="png")
            meta = gr.JSON(label="metadata")
            seed_used = gr.Number(label="seed used", precision=0, interactive=False)

    inputs = [class_name, class_id, model, scale, steps, sampler, seed, num_images, compare_clean]
    outputs = [gallery, plot, meta, seed_used]
    if toy:
        # Cached on first click; compare_clean puts the noise-aware and clean-guided rows side by side.
        gr.Examples(
            [["red circle", -1, first, 10.0, "ddim25", "ddim", 0, 4, True],
             ["cyan cross", -1, first, 3.0, "ddim25", "ddim", 1, 4, True],
             ["yellow triangle", -1, first, 10.0, "50", "ddpm", 2, 4, False]],
            inputs, outputs, fn=classifier_guidance, cache_examples=True, cache_mode="lazy",
            label="examples (cached after the first click)",
        )
    # The paper's setting differs per model (s = 10 for the unconditional 256×256 model).
    model.change(lambda m: gr.update(value=choices[m].default_scale) if m in choices else gr.update(),
                 model, scale, api_visibility="private")
    run.click(classifier_guidance, inputs, outputs, api_name="classifier_guidance", **GPU_QUEUE)
