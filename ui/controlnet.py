"""The ControlNet tab: Canny / depth / pose maps steering SD through the one loop, plus "Why zero convolutions".

Endpoints (parameter names are the public API): ``/controlnet`` (one map), ``/controlnet_multi`` (two
ControlNets, each with its own scale and range) and ``/zero_conv`` (the measured zero-conv facts).
"""

from __future__ import annotations

import gradio as gr

from condition.control import NO_PERSON, canny_map, check_thresholds, depth_map, pose_map, sanitize_image
from guidance.rules import BASES, RULE_NAMES, GuidanceRule
from models.controlnet_loading import CONTROL_ROLES, controlnet_for
from models.loading import load_role_sd
from models.profiles import ROOT, Profile
from models.runtime import pick_runtime
from pipelines.controlnet import MAX_CONDITIONING_SCALE, ControlSpec, controlnet_to_image, validate_control
from pipelines.metadata import Timings, attach_metadata, run_metadata
from pipelines.plots import plot_diagnostics
from pipelines.schedulers import SCHEDULERS
from pipelines.text_to_image import to_pil
from pipelines.zero_conv import zero_conv_analysis
from ui.common import (
    GPU_QUEUE,
    choice,
    default_side,
    flag,
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

CONTROLS = tuple(CONTROL_ROLES)
PHOTO = str(ROOT / "assets" / "photos" / "astronaut.png")

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


def make_endpoints(profile: Profile):
    """The endpoint functions bound to ``profile`` (usable without launching the app)."""
    limits = profile.limits

    def control_map(image, control, preprocess, low, high, resolution, hands=False, face=False):
        """The sanitised upload turned into the map the ControlNet reads, and a note for the user."""
        rgb = sanitize_image(image, max_pixels=limits.max_upload_pixels)
        if not preprocess:
            return rgb, ""
        if control == "canny":
            lo, hi = check_thresholds(low, high)
            return canny_map(rgb, lo, hi), ""
        if control == "depth":
            return depth_map(rgb, profile.source("annotators"), resolution), ""
        out, people = pose_map(rgb, profile.source("annotators"), resolution, hands, face)
        return out, (NO_PERSON if people == 0 else "")

    def common(prompt, negative_prompt, guidance, scale, eta, basis, rescale, steps, width, height, seed,
               scheduler, num_images) -> dict:  # fmt: skip
        return sampling_params(limits, prompt=prompt, negative_prompt=negative_prompt, guidance=guidance, scale=scale,
                               eta=eta, basis=basis, rescale=rescale, steps=steps, width=width, height=height,
                               seed=seed, scheduler=scheduler, num_images=num_images)  # fmt: skip

    def generate(v: dict, controls: list[tuple[str, object, float, float, float]], public: dict, progress):
        runtime = pick_runtime()
        timings = Timings()
        with timings.section("load"):
            sd = load_role_sd(profile, runtime, "sd")
            specs = [ControlSpec(controlnet_for(profile, c, runtime), m, s, a, b) for c, m, s, a, b in controls]
        rule = GuidanceRule(v["guidance"], v["scale"], eta=v["eta"], basis=v["basis"], rescale=v["rescale"])
        with timings.section("sample"):
            out = controlnet_to_image(
                sd, specs, v["prompt"], negative_prompt=v["negative_prompt"], rule=rule, steps=v["steps"],
                width=v["width"], height=v["height"], seed=v["seed"], num_images=v["num_images"],
                scheduler=v["scheduler"], callback=step_progress(progress),
            )
        models = {"sd": sd.source, **{CONTROL_ROLES[c]: profile.source(CONTROL_ROLES[c]) for c, *_ in controls}}
        steps_on = [sum(step[i] for step in out.active) for i in range(len(specs))]
        meta = run_metadata(public, model_id=sd.source, runtime=runtime.name, timings=timings, models=models,
                            rule=rule_metadata(rule),
                            controlnet_steps_on=steps_on)  # fmt: skip
        gallery = [(attach_metadata(to_pil(img), public, {"models": models, "index": i}), f"seed {v['seed']} · #{i}")
                   for i, img in enumerate(out.images)]  # fmt: skip
        plot = plot_diagnostics(out.result, f"ControlNet ({' + '.join(c for c, *_ in controls)}), {rule.name}")
        return gallery, plot, meta

    @guarded
    @on_gpu
    def controlnet(
        image=None,
        control: str = "canny",
        preprocess: bool = True,
        low_threshold: float = 100,
        high_threshold: float = 200,
        preprocess_resolution: int = 512,
        prompt: str = "",
        negative_prompt: str = "",
        guidance: str = "cfg",
        scale: float = 7.5,
        eta: float = 0.0,
        basis: str = "uncond",
        rescale: float = 0.0,
        conditioning_scale: float = 1.0,
        guidance_start: float = 0.0,
        guidance_end: float = 1.0,
        steps: int = 25,
        width: int = 512,
        height: int = 512,
        seed: int = -1,
        scheduler: str = "ddim",
        num_images: int = 1,
        pose_hands: bool = False,
        pose_face: bool = False,
        progress=gr.Progress(),
    ):
        control = choice(control, "control", CONTROLS)
        preprocess, hands, face = (flag(preprocess, "preprocess"), flag(pose_hands, "pose_hands"),
                                   flag(pose_face, "pose_face"))  # fmt: skip
        cs = number(conditioning_scale, "conditioning_scale", 0, MAX_CONDITIONING_SCALE)
        start, end = number(guidance_start, "guidance_start", 0, 1), number(guidance_end, "guidance_end", 0, 1)
        validate_control(cs, start, end)
        res = number(preprocess_resolution, "preprocess_resolution", 64, 2048, integer=True)
        v = common(prompt, negative_prompt, guidance, scale, eta, basis, rescale, steps, width, height, seed,
                   scheduler, num_images)  # fmt: skip
        if not profile.has(CONTROL_ROLES[control]):
            controlnet_for(profile, control)  # raises the explanation before any preprocessing work
        cmap, note = control_map(image, control, preprocess, low_threshold, high_threshold, res, hands, face)
        public = {**v, "control": control, "preprocess": preprocess, "low_threshold": low_threshold,
                  "high_threshold": high_threshold, "preprocess_resolution": res, "conditioning_scale": cs,
                  "guidance_start": start, "guidance_end": end, "pose_hands": hands, "pose_face": face}  # fmt: skip
        if note:
            gr.Warning(note)
        gallery, plot, meta = generate(v, [(control, cmap, cs, start, end)], public, progress)
        meta["notes"] = [note] if note else []
        return attach_metadata(cmap, public), gallery, plot, meta

    @guarded
    @on_gpu
    def controlnet_multi(
        image=None,
        image_b=None,
        control_a: str = "canny",
        control_b: str = "depth",
        preprocess: bool = True,
        low_threshold: float = 100,
        high_threshold: float = 200,
        preprocess_resolution: int = 512,
        prompt: str = "",
        negative_prompt: str = "",
        guidance: str = "cfg",
        scale: float = 7.5,
        conditioning_scale_a: float = 1.0,
        guidance_start_a: float = 0.0,
        guidance_end_a: float = 1.0,
        conditioning_scale_b: float = 1.0,
        guidance_start_b: float = 0.0,
        guidance_end_b: float = 1.0,
        steps: int = 25,
        width: int = 512,
        height: int = 512,
        seed: int = -1,
        scheduler: str = "ddim",
        num_images: int = 1,
        progress=gr.Progress(),
    ):
        preprocess = flag(preprocess, "preprocess")
        res = number(preprocess_resolution, "preprocess_resolution", 64, 2048, integer=True)
        nets = []
        for tag, c, s, a, b in (("a", control_a, conditioning_scale_a, guidance_start_a, guidance_end_a),
                                ("b", control_b, conditioning_scale_b, guidance_start_b, guidance_end_b)):  # fmt: skip
            c = choice(c, f"control_{tag}", CONTROLS)
            s = number(s, f"conditioning_scale_{tag}", 0, MAX_CONDITIONING_SCALE)
            a, b = number(a, f"guidance_start_{tag}", 0, 1), number(b, f"guidance_end_{tag}", 0, 1)
            validate_control(s, a, b)
            if not profile.has(CONTROL_ROLES[c]):
                controlnet_for(profile, c)
            nets.append((c, s, a, b))
        v = common(prompt, negative_prompt, guidance, scale, 0.0, "uncond", 0.0, steps, width, height, seed,
                   scheduler, num_images)  # fmt: skip
        maps, notes = [], []
        for (c, s, a, b), img in zip(nets, (image, image if image_b is None else image_b), strict=True):
            cmap, note = control_map(img, c, preprocess, low_threshold, high_threshold, res)
            maps.append((c, cmap, s, a, b))
            notes += [note] if note else []
        public = {**v, "controls": [{"control": c, "conditioning_scale": s, "guidance_start": a, "guidance_end": b}
                                    for c, s, a, b in nets], "preprocess": preprocess}  # fmt: skip
        gallery, plot, meta = generate(v, maps, public, progress)
        meta["notes"] = notes
        return [(attach_metadata(m[1], public), m[0]) for m in maps], gallery, plot, meta

    @guarded
    @on_gpu
    def zero_conv(seed: int = 0, latent_size: int = 8):
        report = zero_conv_analysis(
            downsample=8, latent_size=number(latent_size, "latent_size", 2, 32, integer=True),
            seed=number(seed, "seed", 0, 2**31 - 1, integer=True),
        )
        return report.as_dict(), zero_conv_summary(report.as_dict())

    return controlnet, controlnet_multi, zero_conv


def zero_conv_summary(r: dict) -> str:
    """The measured numbers as a short Markdown table."""
    rows = [
        ("zero convolutions checked", f"{r['zero_convs']}"),
        ("largest residual at init", f"{r['max_abs_residual']:g}"),
        ("UNet output change at init", f"{r['max_abs_output_change']:g} (bit identical: {r['bit_identical']})"),
        ("smallest zero-conv weight-gradient norm", f"{r['min_weight_grad_norm']:.3e}"),
        ("weight gradient vs Σ g ⊗ x (relative error)", f"{r['weight_grad_rel_error']:.1e}"),
        ("bias gradient vs Σ g (relative error)", f"{r['bias_grad_rel_error']:.1e}"),
        ("gradient reaching the copy, step 1", f"{r['trunk_grad_max_abs']:g}"),
        ("gradient reaching the copy, after one step", f"{r['trunk_grad_norm_after_one_step']:.3e}"),
        ("seconds", f"{r['seconds']:.2f}"),
    ]
    return "| measured | value |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)


def build(profile: Profile) -> None:
    cn_fn, multi_fn, zc_fn = make_endpoints(profile)
    limits = profile.limits
    side = default_side(profile, "sd")
    gr.Markdown(INTRO)
    have = [c for c in CONTROLS if profile.has(CONTROL_ROLES[c])]
    missing = [c for c in CONTROLS if c not in have]
    toy = profile.name == "toy"
    if missing:
        why = " The toy world is flat shapes: there is no toy depth or pose model." if toy else ""
        gr.Markdown(f"**Profile `{profile.name}`** has ControlNets for: {', '.join(have) or 'none'}; "
                    f"not for {', '.join(missing)}.{why}")  # fmt: skip
    # The toy models only know the shapes world: their default input is a world scene, recoloured by the prompt.
    default_image, default_prompt = ((toy_example("two_shapes"), "a blue cross and a yellow square") if toy
                                     else (PHOTO, "a photo of an astronaut"))  # fmt: skip
    with gr.Row():
        with gr.Column(scale=1):
            image = image_upload(value=default_image, label="image (or a ready-made map)", format="png")
            control = gr.Radio(list(CONTROLS), value=(have or ["canny"])[0], label="control")
            preprocess = gr.Checkbox(True, label="preprocess (off = the image already is the map)")
            with gr.Row():
                low = gr.Slider(0, 255, value=100, step=1, label="Canny low threshold")
                high = gr.Slider(0, 255, value=200, step=1, label="Canny high threshold")
            resolution = gr.Slider(64, 1024, value=512, step=64, label="preprocess resolution (depth, pose)")
            with gr.Row():
                hands = gr.Checkbox(False, label="pose: hands")
                face = gr.Checkbox(False, label="pose: face")
            prompt = gr.Textbox(default_prompt, label="prompt", lines=2)
            negative = gr.Textbox("", label="negative prompt")
            guidance = gr.Radio(list(RULE_NAMES), value="cfg", label="guidance")
            scale = gr.Slider(0, 30, value=7.5, step=0.5, label="scale w")
            eta = gr.Slider(0, 1, value=0.0, step=0.05, label="η (Perp-CFG)")
            basis = gr.Radio(list(BASES), value="uncond", label="Perp-CFG basis")
            rescale = gr.Slider(0, 1, value=0.0, step=0.05, label="rescale φ")
            cscale = gr.Slider(0, MAX_CONDITIONING_SCALE, value=1.0, step=0.05, label="conditioning scale")
            with gr.Row():
                start = gr.Slider(0, 1, value=0.0, step=0.05, label="guidance start")
                end = gr.Slider(0, 1, value=1.0, step=0.05, label="guidance end")
            steps = gr.Slider(1, limits.max_steps, value=min(25, limits.max_steps), step=1, label="steps")
            with gr.Row():
                width = gr.Number(side, precision=0, label="width")
                height = gr.Number(side, precision=0, label="height")
            seed = gr.Number(0, precision=0, label="seed (−1 = random)")
            scheduler = gr.Dropdown(list(SCHEDULERS), value="ddim", label="scheduler")
            num_images = images_slider(limits)
            run = gr.Button("Generate", variant="primary", elem_id="cn-run")
        with gr.Column(scale=2):
            cmap = gr.Image(label="control map (what the ControlNet reads)", type="pil", format="png")
            gallery = gr.Gallery(label="images (PNG, parameters embedded)", format="png", columns=2,
                                 elem_id="cn-gallery")
            plot = gr.Image(label="per-step diagnostics", type="pil", format="png")
            meta = gr.JSON(label="metadata")
    inputs = [image, control, preprocess, low, high, resolution, prompt, negative, guidance, scale, eta, basis,
              rescale, cscale, start, end, steps, width, height, seed, scheduler, num_images, hands, face]
    if toy and "canny" in have:
        # Edges from one scene, colours from the prompt; then a prompt that contradicts the edges. The toy model
        # draws the prompt's shape where the map's shape is, at its size (scale 1), and anywhere at scale 0.
        n = min(25, limits.max_steps)

        def row(name: str, text: str, conditioning_scale: float, seed: int) -> list:
            return [toy_example(name), "canny", True, 100, 200, 512, text, "", "cfg", 4.0, 0.0, "uncond", 0.0,
                    conditioning_scale, 0.0, 1.0, n, side, side, seed, "ddim", 2, False, False]

        gr.Examples(
            [row("two_shapes", "a blue cross and a yellow square", 1.0, 0),
             row("large_circle", "a magenta square", 1.0, 1), row("large_circle", "a magenta square", 0.0, 1)],
            inputs, [cmap, gallery, plot, meta], fn=cn_fn, cache_examples=True, cache_mode="lazy",
            label="examples (cached after the first click)",
        )
    run.click(cn_fn, inputs, [cmap, gallery, plot, meta], api_name="controlnet", **GPU_QUEUE)

    with gr.Accordion("Multi-ControlNet: two maps, each with its own scale and range", open=False):
        with gr.Row():
            image_b = image_upload(value=None, label="second image (empty = the same image)", format="png")
            with gr.Column():
                control_a = gr.Radio(list(CONTROLS), value="canny", label="ControlNet A")
                scale_a = gr.Slider(0, MAX_CONDITIONING_SCALE, value=1.0, step=0.05, label="A: conditioning scale")
                start_a = gr.Slider(0, 1, value=0.0, step=0.05, label="A: start")
                end_a = gr.Slider(0, 1, value=1.0, step=0.05, label="A: end")
            with gr.Column():
                control_b = gr.Radio(list(CONTROLS), value="depth", label="ControlNet B")
                scale_b = gr.Slider(0, MAX_CONDITIONING_SCALE, value=1.0, step=0.05, label="B: conditioning scale")
                start_b = gr.Slider(0, 1, value=0.0, step=0.05, label="B: start")
                end_b = gr.Slider(0, 1, value=1.0, step=0.05, label="B: end")
        multi = gr.Button("Generate with both")
        maps_out = gr.Gallery(label="control maps", format="png", columns=2)
        gallery_m = gr.Gallery(label="images", format="png", columns=2)
        plot_m = gr.Image(label="per-step diagnostics", type="pil", format="png")
        meta_m = gr.JSON(label="metadata")
    multi.click(
        multi_fn,
        [image, image_b, control_a, control_b, preprocess, low, high, resolution, prompt, negative, guidance, scale,
         scale_a, start_a, end_a, scale_b, start_b, end_b, steps, width, height, seed, scheduler, num_images],
        [maps_out, gallery_m, plot_m, meta_m], api_name="controlnet_multi", **GPU_QUEUE,
    )

    with gr.Accordion("Why zero convolutions", open=False):
        gr.Markdown(ZERO_CONV_INTRO)
        with gr.Row():
            zc_seed = gr.Number(0, precision=0, label="seed")
            zc_size = gr.Slider(2, 32, value=8, step=1, label="latent size")
            zc_run = gr.Button("Measure")
        zc_table = gr.Markdown()
        zc_json = gr.JSON(label="measured")
    zc_run.click(zc_fn, [zc_seed, zc_size], [zc_json, zc_table], api_name="zero_conv", **GPU_QUEUE)
