"""The text-to-image tab: Stable Diffusion through the one loop, with CFG / Perp-CFG, sweeps and attention maps.

Endpoints (their parameter names are the public API): ``/text_to_image`` and ``/guidance_sweep``.
Every input is validated against the profile's limits before the model is even loaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import gradio as gr

from condition.text import prompt_tokens
from guidance.rules import BASES, RULE_NAMES
from models.loading import load_role_sd
from models.profiles import Profile
from models.runtime import pick_runtime
from pipelines.attention import overlay, token_map, token_positions
from pipelines.metadata import Timings, attach_metadata, client_snippet, run_metadata
from pipelines.plots import plot_diagnostics
from pipelines.schedulers import SCHEDULERS
from pipelines.sweep import guidance_sweep as run_sweep
from pipelines.sweep import parse_scales, sweep_grid
from pipelines.text_to_image import T2IParams, check_limits, to_pil
from pipelines.text_to_image import text_to_image as run_t2i
from ui.common import (
    GPU_QUEUE,
    SIZE_MULTIPLE,
    choice,
    default_side,
    guarded,
    image_side,
    images_slider,
    number,
    on_gpu,
    resolve_seed,
    rule_metadata,
    sampling_params,
    step_progress,
    text,
)

ROLE = "sd"

INTRO = """
Stable Diffusion sampled by this app's own loop. **CFG** pushes along the whole difference Δ = c − u between
the conditional and unconditional predictions; **Perp-CFG** pushes only across the unconditional direction
(plus η of the rest), which keeps colours from saturating at large scales. The plot shows ‖Δ∥‖, ‖Δ⊥‖ and how
much of the predicted image leaves the valid range at each step. Every PNG carries its parameters.
"""


def _snippet_target() -> str:
    # On a Space the client connects by Space id; locally to the default port.
    return os.environ.get("SPACE_ID") or "http://127.0.0.1:7860/"


def make_endpoints(profile: Profile) -> tuple[Callable, Callable]:
    """The two endpoint functions bound to ``profile`` (usable without launching the app)."""
    limits = profile.limits

    def validate(prompt, negative_prompt, steps, width, height, scheduler, num_images=1) -> dict:
        values = dict(
            prompt=text(prompt, "prompt"),
            negative_prompt=text(negative_prompt, "negative_prompt"),
            steps=number(steps, "steps", 1, limits.max_steps, integer=True),
            width=image_side(width, "width"),
            height=image_side(height, "height"),
            scheduler=choice(scheduler, "scheduler", tuple(SCHEDULERS)),
        )
        num_images = number(num_images, "num_images", 1, limits.max_images, integer=True)
        check_limits(limits, width=values["width"], height=values["height"], steps=values["steps"],
                     num_images=num_images)
        return {**values, "num_images": num_images}

    @guarded
    @on_gpu
    def text_to_image(
        prompt: str = "",
        negative_prompt: str = "",
        guidance: str = "cfg",
        scale: float = 7.5,
        eta: float = 0.0,
        basis: str = "uncond",
        rescale: float = 0.0,
        steps: int = 25,
        width: int = 512,
        height: int = 512,
        seed: int = -1,
        scheduler: str = "ddim",
        num_images: int = 1,
        attention_token: str = "",
        progress=gr.Progress(),
    ):
        params = T2IParams(**sampling_params(
            limits, prompt=prompt, negative_prompt=negative_prompt, guidance=guidance, scale=scale, eta=eta,
            basis=basis, rescale=rescale, steps=steps, width=width, height=height, seed=seed, scheduler=scheduler,
            num_images=num_images,
        ))
        token = text(attention_token, "attention_token").strip()
        runtime = pick_runtime()
        timings = Timings()
        with timings.section("load"):
            sd = load_role_sd(profile, runtime, ROLE)
        positions = token_positions(prompt_tokens(sd.tokenizer, params.prompt), token) if token else []
        with timings.section("sample"):
            out = run_t2i(
                sd, params.prompt, negative_prompt=params.negative_prompt, rule=params.rule, steps=params.steps,
                width=params.width, height=params.height, seed=params.seed, num_images=params.num_images,
                scheduler=params.scheduler, callback=step_progress(progress), attention=bool(positions),
            )
        public = params.as_dict()
        rule = params.rule
        notes = [f"prompt truncated to the text encoder's {sd.tokenizer.model_max_length} tokens; dropped: {t!r}"
                 for t in out.truncated if t]
        meta = run_metadata(
            public, model_id=sd.source, runtime=runtime.name, timings=timings,
            rule=rule_metadata(rule),
            truncated=bool(notes), notes=notes,
        )
        if notes:
            gr.Warning(notes[0])
        images = [to_pil(img) for img in out.images]
        gallery = [(attach_metadata(img, public, {"model_id": sd.source, "index": i}), f"seed {params.seed} · #{i}")
                   for i, img in enumerate(images)]
        overlays = []
        if out.attention is not None:
            heat = token_map(out.attention, positions)
            overlays = [(overlay(img, heat[i]), f"attention to {token!r} · #{i}") for i, img in enumerate(images)]
        plot = plot_diagnostics(out.result, f"{rule.name}, w = {rule.scale:g}")
        snippet = client_snippet("/text_to_image", {**public, "attention_token": token}, _snippet_target())
        return gallery, plot, meta, params.seed, overlays, snippet

    @guarded
    @on_gpu
    def guidance_sweep(
        prompt: str = "",
        negative_prompt: str = "",
        scales: str = "1, 3, 7.5, 12, 20",
        eta: float = 0.0,
        basis: str = "uncond",
        rescale: float = 0.0,
        steps: int = 25,
        width: int = 512,
        height: int = 512,
        seed: int = -1,
        scheduler: str = "ddim",
        progress=gr.Progress(),
    ):
        v = validate(prompt, negative_prompt, steps, width, height, scheduler)
        v.pop("num_images")
        scale_list = parse_scales(scales)
        public = dict(
            **{k: v[k] for k in ("prompt", "negative_prompt")}, scales=scale_list,
            eta=number(eta, "eta", 0, 1), basis=choice(basis, "basis", BASES),
            rescale=number(rescale, "rescale", 0, 1),
            **{k: v[k] for k in ("steps", "width", "height")},
            seed=resolve_seed(seed), scheduler=v["scheduler"],
        )
        runtime = pick_runtime()
        timings = Timings()
        with timings.section("load"):
            sd = load_role_sd(profile, runtime, ROLE)
        with timings.section("sample"):
            out = run_sweep(
                sd, public["prompt"], scale_list, negative_prompt=public["negative_prompt"], eta=public["eta"],
                basis=public["basis"], rescale_phi=public["rescale"], steps=public["steps"], width=public["width"],
                height=public["height"], seed=public["seed"], scheduler=public["scheduler"],
                callback=step_progress(progress, "denoising all cells"),
            )
        meta = run_metadata(
            public, model_id=sd.source, runtime=runtime.name, timings=timings,
            cells=[{"rule": r, "scale": s} for r, s in out.cells], batched_rows=len(out.cells),
            truncated=any(out.truncated),
        )
        grid = attach_metadata(sweep_grid(out.images, out.cells), public, {"model_id": sd.source})
        return grid, meta, public["seed"]

    return text_to_image, guidance_sweep


def build(profile: Profile) -> None:
    """Lay out the tab; the endpoints exist even without an ``sd`` role (they then explain what is missing)."""
    t2i_fn, sweep_fn = make_endpoints(profile)
    limits = profile.limits
    size = default_side(profile, ROLE)
    steps_default = min(25, limits.max_steps)
    gr.Markdown(INTRO)
    if not profile.has(ROLE):
        gr.Markdown(f"**This profile (`{profile.name}`) has no `{ROLE}` model**, so this tab cannot generate. "
                    f"Add `{ROLE} = \"hub-id-or-/path/to/folder\"` to the profile TOML.")
    else:
        gr.Markdown(f"Model: `{profile.source(ROLE)}` (loaded on first use).")

    with gr.Row():
        with gr.Column(scale=1):
            prompt = gr.Textbox("a red circle" if profile.name == "toy" else "a photo of a red cat", label="prompt",
                                lines=2)
            negative = gr.Textbox("", label="negative prompt (the unconditional branch)")
            guidance = gr.Radio(list(RULE_NAMES), value="cfg", label="guidance")
            scale = gr.Slider(0, 30, value=7.5, step=0.5, label="scale w")
            eta = gr.Slider(0, 1, value=0.0, step=0.05, label="η: Perp-CFG's parallel weight (1 = CFG)")
            basis = gr.Radio(list(BASES), value="uncond", label="Perp-CFG basis")
            rescale = gr.Slider(0, 1, value=0.0, step=0.05, label="rescale φ")
            steps = gr.Slider(1, limits.max_steps, value=steps_default, step=1, label="steps")
            with gr.Row():
                width = gr.Number(size, precision=0, step=SIZE_MULTIPLE, label="width (multiple of 8)")
                height = gr.Number(size, precision=0, step=SIZE_MULTIPLE, label="height (multiple of 8)")
            seed = gr.Number(0, precision=0, label="seed (−1 = random)")
            scheduler = gr.Dropdown(list(SCHEDULERS), value="ddim", label="scheduler")
            num_images = images_slider(limits)
            token = gr.Textbox("", label="cross-attention map for token (empty = off)",
                               placeholder="e.g. red")
            run = gr.Button("Generate", variant="primary", elem_id="t2i-run")
        with gr.Column(scale=2):
            gallery = gr.Gallery(label="images (PNG, parameters embedded)", format="png", columns=2,
                                 elem_id="t2i-gallery")
            seed_used = gr.Number(label="seed used", precision=0, interactive=False)
            attention = gr.Gallery(label="cross-attention overlay", format="png", columns=2)
            plot = gr.Image(label="per-step diagnostics", type="pil", format="png")
            meta = gr.JSON(label="metadata")
            snippet = gr.Code(label="reproduce with gradio_client", language="python")

    with gr.Accordion("Guidance sweep: scales × {CFG, Perp-CFG} at one seed, one batched run", open=False):
        with gr.Row():
            scales = gr.Textbox("1, 3, 7.5, 12, 20", label="scales (comma separated)")
            sweep_btn = gr.Button("Run sweep")
        grid = gr.Image(label="sweep grid", type="pil", format="png")
        sweep_meta = gr.JSON(label="sweep metadata")
        sweep_seed = gr.Number(label="seed used", precision=0, interactive=False)

    if profile.name == "toy":
        # Cached on first click: the toy model answers in about a second, and the example then serves instantly.
        gr.Examples(
            [["a red circle", "", "cfg", 7.0, 0.0, "uncond", 0.0, steps_default, size, size, 0, "ddim", 2, "red"],
             ["a blue square on the left and a yellow circle", "", "perp-cfg", 7.0, 0.0, "uncond", 0.0,
              steps_default, size, size, 1, "ddim", 2, "yellow"],
             ["a green cross", "", "none", 1.0, 0.0, "uncond", 0.0, steps_default, size, size, 2, "ddim", 2, ""]],
            [prompt, negative, guidance, scale, eta, basis, rescale, steps, width, height, seed, scheduler,
             num_images, token],
            [gallery, plot, meta, seed_used, attention, snippet],
            fn=t2i_fn, cache_examples=True, cache_mode="lazy", label="examples (cached after the first click)",
        )
    run.click(
        t2i_fn,
        [prompt, negative, guidance, scale, eta, basis, rescale, steps, width, height, seed, scheduler, num_images,
         token],
        [gallery, plot, meta, seed_used, attention, snippet],
        api_name="text_to_image", **GPU_QUEUE,
    )
    sweep_btn.click(
        sweep_fn,
        [prompt, negative, scales, eta, basis, rescale, steps, width, height, seed, scheduler],
        [grid, sweep_meta, sweep_seed],
        api_name="guidance_sweep", **GPU_QUEUE,
    )
