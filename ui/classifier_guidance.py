"""The classifier-guidance tab: ADM + noise-aware classifier on ImageNet classes (endpoint ``/classifier_guidance``)."""

from __future__ import annotations

import gradio as gr
from PIL import Image

from condition.labels import display_name, display_names, resolve_class
from models.adm_loading import CHOICES, load_adm_pair, role_spec
from models.profiles import Profile
from models.runtime import pick_runtime
from pipelines.classifier_guidance import (
    SAMPLERS,
    check_scale,
    classifier_guided_sample,
    load_clean_classifier,
    parse_steps,
    plot_log_prob,
)
from pipelines.metadata import Timings, attach_metadata, run_metadata
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


def _to_pil(image) -> Image.Image:
    array = (image.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
    return Image.fromarray(array)


def build(profile: Profile) -> None:
    limits = profile.limits

    @guarded
    @on_gpu
    def classifier_guidance(
        class_name: str = display_name(DEFAULT_CLASS),
        class_id: int | None = -1,
        model: str = "64x64",
        classifier_scale: float = 1.0,
        steps: str = "ddim25",
        sampler: str = "ddim",
        seed: int = 0,
        num_images: int = 1,
        compare_clean: bool = False,
        progress=gr.Progress(),
    ):
        # Everything is checked before any model is loaded or any step taken.
        target = resolve_class(class_name, class_id)
        model = choice(model, "model", tuple(CHOICES))
        scale = check_scale(classifier_scale, MAX_SCALE)
        spec = role_spec(profile, "adm_diffusion", model)
        respacing, _ = parse_steps(steps, int(spec.flags.get("diffusion_steps", 1000)), limits.max_steps)
        sampler = choice(sampler, "sampler", SAMPLERS)
        seed = resolve_seed(seed)
        n = number(num_images, "num_images", 1, limits.max_images, integer=True)
        if not isinstance(compare_clean, bool):
            raise ValueError(f"compare_clean must be true or false, got {str(compare_clean)[:40]!r}")
        size = int(spec.flags["image_size"])
        if size * size > limits.max_pixels:
            raise ValueError(f"the {model} model makes {size}×{size} images; this server allows {limits.max_pixels} "
                             "pixels per image")

        runtime = pick_runtime()
        timings = Timings()
        with timings.section("load"):
            pair = load_adm_pair(profile, model, runtime)
            clean_net = load_clean_classifier(runtime) if compare_clean else None
        with timings.section("sample"):
            result = classifier_guided_sample(
                pair, class_id=target, classifier_scale=scale, steps=respacing, sampler=sampler, seed=seed,
                num_images=n, compare_clean=compare_clean, clean_classifier=clean_net, runtime=runtime,
                callback=step_progress(progress, "guided by the noise-aware classifier"),
                clean_callback=step_progress(progress, "guided by ResNet-50 on x̂₀"),
                max_steps=limits.max_steps,
            )
        public = dict(class_name=display_name(target), class_id=target, model=model, classifier_scale=scale,
                      steps=respacing, sampler=sampler, seed=seed, num_images=n, compare_clean=compare_clean)
        gallery = []
        for run in (result.guided, result.clean):
            if run is None:
                continue
            for i, image in enumerate(run.images):
                png = attach_metadata(_to_pil(image), public, {"guide": run.guide, "index": i,
                                                               "sources": result.params["sources"]})
                gallery.append((png, f"{run.guide}-guided · seed {seed} · #{i}"))
        plot = plot_log_prob(result, f"{display_name(target)} · s = {scale:g} · {sampler} {respacing}")
        meta = run_metadata(public, model_id=pair.sources["adm_diffusion"], runtime=runtime.name, timings=timings,
                            classifier_id=pair.sources["adm_classifier"], **result.metadata())
        return gallery, plot, meta, seed

    gr.Markdown(INTRO)
    try:
        backing = [f"- **{c}**: `{role_spec(profile, 'adm_diffusion', c).file_name}` + "
                   f"`{role_spec(profile, 'adm_classifier', c).file_name}`" for c in CHOICES]
        gr.Markdown("Checkpoints behind each model choice (loaded on first use):\n" + "\n".join(backing))
    except ValueError as e:  # a broken profile entry should not take the whole app down
        gr.Markdown(f"**This profile's ADM roles are invalid:** {e}")
    with gr.Row():
        with gr.Column(scale=1):
            class_name = gr.Dropdown(list(display_names()), value=display_name(DEFAULT_CLASS), filterable=True,
                                     allow_custom_value=True, label="ImageNet class (type to search)")
            class_id = gr.Number(-1, precision=0, label="or class id 0–999 (−1 = use the name)")
            model = gr.Radio(list(CHOICES), value="64x64", label="model",
                             info=" · ".join(f"{k}: {v.description}" for k, v in CHOICES.items()))
            scale = gr.Slider(0, MAX_SCALE, value=CHOICES["64x64"].default_scale, step=0.1, label="classifier scale s")
            steps = gr.Textbox(f"ddim{min(25, profile.limits.max_steps)}",
                               label='steps (respacing: "250", "100", "ddim25", "50" …)')
            sampler = gr.Radio(list(SAMPLERS), value="ddim", label="sampler")
            seed = gr.Number(0, precision=0, label="seed (−1 = random)")
            num_images = images_slider(limits)
            compare_clean = gr.Checkbox(False, label="compare with a clean ResNet-50 guiding on x̂₀ (same seed)")
            run = gr.Button("Sample", variant="primary", elem_id="cg-run")
        with gr.Column(scale=2):
            gallery = gr.Gallery(label="samples (PNG, parameters embedded)", format="png", columns=4,
                                 elem_id="cg-gallery")
            plot = gr.Image(label="log p(target) and top-5 over the steps", type="pil", format="png")
            meta = gr.JSON(label="metadata")
            seed_used = gr.Number(label="seed used", precision=0, interactive=False)

    # The paper's setting differs per model (s = 10 for the unconditional 256×256 model).
    model.change(lambda m: gr.update(value=CHOICES[m].default_scale) if m in CHOICES else gr.update(),
                 model, scale, api_visibility="private")
    run.click(
        classifier_guidance,
        [class_name, class_id, model, scale, steps, sampler, seed, num_images, compare_clean],
        [gallery, plot, meta, seed_used],
        api_name="classifier_guidance", **GPU_QUEUE,
    )
