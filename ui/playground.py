"""The 2D guidance playground tab (exact scores, CPU, no models to load)."""

from __future__ import annotations

import gradio as gr

from guidance.rules import BASES
from models.gmm2d import default_mixture
from pipelines.playground import GUIDANCE_MODES, SAMPLERS, plot_playground, run_playground
from ui.common import choice, guarded, number, resolve_seed, step_progress

INTRO = """
A labelled 2D Gaussian mixture has **closed-form** noisy scores, so every guidance rule here is exact.
The contours show the *sharpened conditional* p(x) p(c|x)^w at t = 0: what CFG with scale w and classifier
guidance with scale s = w aim at. Watch the share of samples in the target class rise with w while each mode
narrows, and compare how Perp-CFG (guidance only across the unconditional score) spends the same w.
"""


@guarded
def playground(
    guidance: str = "cfg",
    scale: float = 3.0,
    eta: float = 0.0,
    basis: str = "uncond",
    target_class: str = "red",
    sampler: str = "ddpm",
    steps: int = 200,
    num_samples: int = 1000,
    seed: int = 0,
    progress=gr.Progress(),
):
    guidance = choice(guidance, "guidance", GUIDANCE_MODES)
    seed = resolve_seed(seed)
    run = run_playground(
        guidance=guidance,
        scale=number(scale, "scale", 0, 30),
        eta=number(eta, "eta", 0, 1),
        basis=choice(basis, "basis", BASES),
        target_class=choice(target_class, "target_class", default_mixture().class_names),
        sampler=choice(sampler, "sampler", SAMPLERS),
        steps=number(steps, "steps", 1, 1000, integer=True),
        num_samples=number(num_samples, "num_samples", 1, 5000, integer=True),
        seed=seed,
        callback=step_progress(progress),
    )
    return plot_playground(run, guidance, scale), {**run.stats, "seed": seed, "guidance": guidance, "scale": scale}


def build() -> None:
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=1):
            guidance = gr.Radio(list(GUIDANCE_MODES), value="cfg", label="guidance")
            scale = gr.Slider(0, 30, value=3.0, step=0.1, label="scale (w, or s for the classifier)")
            eta = gr.Slider(0, 1, value=0.0, step=0.05, label="η: Perp-CFG's parallel weight")
            basis = gr.Radio(list(BASES), value="uncond", label="Perp-CFG basis")
            target = gr.Dropdown(list(default_mixture().class_names), value="red", label="target class")
            sampler = gr.Radio(list(SAMPLERS), value="ddpm", label="sampler")
            steps = gr.Slider(1, 1000, value=200, step=1, label="steps")
            num_samples = gr.Slider(100, 5000, value=1000, step=100, label="samples")
            seed = gr.Number(0, precision=0, label="seed (−1 = random)")
            run = gr.Button("Sample", variant="primary", elem_id="pg-run")
        with gr.Column(scale=2):
            plot = gr.Image(label="samples over p(x) p(c|x)^w", type="pil", format="png", elem_id="pg-plot")
            stats = gr.JSON(label="statistics")
    run.click(
        playground,
        [guidance, scale, eta, basis, target, sampler, steps, num_samples, seed],
        [plot, stats],
        api_name="playground",
        concurrency_limit=2,
    )
