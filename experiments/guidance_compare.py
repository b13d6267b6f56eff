"""Classifier guidance vs classifier-free guidance on the same classes, one class and one seed.

Classifier guidance (Dhariwal & Nichol 2021) steers an unconditional model with ∇ log p(y | x_t) of a separate
noise-aware classifier: one model call, one classifier forward and one backward pass per step. CFG (Ho & Salimans
2022) needs no classifier and no backward pass: the class-conditional model is called with the label and with the
null label (one batched call of twice the rows). Both runs are read by the same yardstick, the noise-aware
classifier's log p(y | ·) at every step:

* the toy world: both models sample 32×32 pixels on the same 1000-step schedule, so the classifier reads x_t itself;
* ImageNet: the DiT samples SD-VAE latents and ADM pixels, so the classifier reads each step's predicted x̂0 (decoded
  and resized to its input) at t = 0, for both runs.

The cost columns are counted by hooks on the networks during the runs (model rows, classifier forwards, backward
passes) and timed; the unguided step is the diffusion network's own forward time per step (classifier guidance) or
a run of the DiT with the label only (CFG).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from guidance.rules import GuidanceRule
from guidance.sampler import StepState
from models.loading.dit import DiTComponents
from pipelines.class_cfg import class_cfg_sample, decode_to_unit
from pipelines.classifier_guidance import GuidedModels, GuidedRun, classifier_guided_sample


@dataclass
class CallCounter:
    """Forward calls, rows and seconds of one module, and how many of its calls ran with autograd on."""

    calls: int = 0
    rows: int = 0
    grad_calls: int = 0
    seconds: float = 0.0
    _start: list[float] = field(default_factory=list)


@contextmanager
def counting(module: nn.Module) -> Iterator[CallCounter]:
    counter = CallCounter()

    def before(mod: nn.Module, args: tuple) -> None:
        counter._start.append(time.perf_counter())

    def after(mod: nn.Module, args: tuple, output: object) -> None:
        counter.seconds += time.perf_counter() - counter._start.pop()
        counter.calls += 1
        counter.rows += int(args[0].shape[0]) if args and torch.is_tensor(args[0]) else 0
        counter.grad_calls += int(torch.is_grad_enabled())

    handles = [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    try:
        yield counter
    finally:
        for handle in handles:
            handle.remove()


@dataclass(frozen=True)
class StepCost:
    """What one denoising step of a method cost, per image."""

    method: str
    model_rows: float  # rows the diffusion network evaluated per step per image (CFG: 2)
    classifier_forwards: float
    backward_passes: float
    seconds_per_step: float
    unguided_seconds_per_step: float

    @property
    def ratio(self) -> float:
        unguided = self.unguided_seconds_per_step
        return self.seconds_per_step / unguided if unguided else float("nan")


@dataclass
class Comparison:
    class_id: int
    class_name: str
    cg: GuidedRun
    cfg_images: Tensor  # [N, 3, H, W] in [0, 1]
    cg_log_prob: np.ndarray  # [steps, N] the yardstick along the classifier-guided run
    cfg_log_prob: np.ndarray  # [steps, N] along the CFG run
    yardstick: str  # what the classifier read: "x_t" or "decoded x̂0 at t = 0"
    costs: tuple[StepCost, StepCost]
    extra: dict = field(default_factory=dict)


def yardstick_logits(classifier: nn.Module, size: int, on_x_t: bool) -> Callable[[StepState, Tensor], Tensor]:
    """The noise-aware classifier's logits for a loop state: on x_t at the loop's t (``on_x_t``), or on the predicted
    x̂0 (``rgb``, images in [−1, 1]) resized to its input at t = 0."""

    def logits(state: StepState, rgb: Tensor) -> Tensor:
        if on_x_t:
            return classifier(state.x.float(), torch.as_tensor(state.t).reshape(-1).expand(state.x.shape[0]))
        image = rgb.float()
        if image.shape[-1] != size:
            image = F.interpolate(image, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return classifier(image, torch.zeros(image.shape[0], dtype=torch.long, device=image.device))

    return logits


def _picked(logits: Tensor, y: int) -> np.ndarray:
    return F.log_softmax(logits.float(), dim=-1)[:, y].cpu().numpy()


def compare(
    pair: GuidedModels,
    dit: DiTComponents,
    *,
    class_id: int,
    classifier_scale: float,
    cfg_scale: float,
    steps: int,
    seed: int = 0,
    num_images: int = 1,
    same_space: bool,
    on_step: Callable[[str, StepState], None] | None = None,
) -> Comparison:
    """Sample ``class_id`` with both methods from the same seed, DDIM ``steps`` each, and measure them."""
    classifier = pair.classifier
    size = int(getattr(classifier, "image_size", pair.image_size))
    read = yardstick_logits(classifier, size, on_x_t=same_space)
    y = int(class_id)

    # --- classifier guidance: its own recorder already holds log p(y | x_t) at every step
    cg_x0: dict[int, np.ndarray] = {}

    def cg_step(state: StepState) -> None:
        if not same_space:
            with torch.no_grad():
                cg_x0[state.step_index] = _picked(read(state, state.pred_x0.clamp(-1, 1)), y)
        if on_step is not None:
            on_step("classifier guidance", state)

    with counting(classifier) as cls_count, counting(pair.diffusion_module) as base_count:
        cg = classifier_guided_sample(pair, class_id=y, classifier_scale=classifier_scale, steps=f"ddim{steps}",
                                      sampler="ddim", seed=seed, num_images=num_images, callback=cg_step).guided
    n_cg = len(cg.timesteps)
    cg_log_prob = cg.noise_aware_log_prob if same_space else np.stack([cg_x0[i] for i in range(n_cg)])

    # --- CFG on the DiT, the yardstick timed apart so it is not billed to the method
    cfg_lp: dict[int, np.ndarray] = {}
    reading = [0.0]

    def cfg_step(state: StepState) -> None:
        start = time.perf_counter()
        with torch.no_grad():
            rgb = state.pred_x0.clamp(-1, 1) if dit.vae is None else decode_to_unit(dit, state.pred_x0) * 2 - 1
            cfg_lp[state.step_index] = _picked(read(state, rgb), y)
        reading[0] += time.perf_counter() - start
        if on_step is not None:
            on_step("CFG", state)

    # One untimed step first: the DiT's first call pays one-off costs (kernel selection, allocator growth).
    class_cfg_sample(dit, class_id=y, rule=GuidanceRule("cfg", cfg_scale), steps=1, scheduler="ddim", seed=seed,
                     num_images=num_images, diagnostics=False)
    with counting(dit.transformer) as dit_count:
        cfg = class_cfg_sample(dit, class_id=y, rule=GuidanceRule("cfg", cfg_scale), steps=steps, scheduler="ddim",
                               seed=seed, num_images=num_images, callback=cfg_step, diagnostics=False)
    unguided = class_cfg_sample(dit, class_id=y, rule=GuidanceRule("none"), steps=steps, scheduler="ddim",
                                seed=seed, num_images=num_images, diagnostics=False)
    n_cfg = len(cfg_lp)
    cfg_log_prob = np.stack([cfg_lp[i] for i in range(n_cfg)])

    per = float(num_images)
    cg_cost = StepCost(
        # Guidance passes only: the classifier's one no-grad call on the final sample is the yardstick's.
        "classifier guidance", base_count.rows / n_cg / per, cls_count.grad_calls / n_cg, cls_count.grad_calls / n_cg,
        cg.seconds / n_cg, base_count.seconds / n_cg)
    cfg_cost = StepCost("CFG", dit_count.rows / n_cfg / per, 0.0, 0.0, (cfg.seconds - reading[0]) / n_cfg,
                        unguided.seconds / n_cfg)
    return Comparison(y, dit.label(y), cg, cfg.images, cg_log_prob, cfg_log_prob,
                      "x_t" if same_space else "decoded x̂0 at t = 0", (cg_cost, cfg_cost),
                      {"cfg_seconds": cfg.seconds - reading[0], "yardstick_seconds": reading[0]})


def cost_table(costs: tuple[StepCost, ...]) -> str:
    rows = ["| method | model rows / step | classifier forwards / step | backward passes / step | s / step | "
            "unguided s / step | ratio |", "|---|---:|---:|---:|---:|---:|---:|"]
    for c in costs:
        rows.append(f"| {c.method} | {c.model_rows:g} | {c.classifier_forwards:g} | {c.backward_passes:g} | "
                    f"{c.seconds_per_step * 1e3:.1f} ms | {c.unguided_seconds_per_step * 1e3:.1f} ms | "
                    f"{c.ratio:.2f}× |")
    return "\n".join(rows)


def log_prob_frame(result: Comparison) -> pd.DataFrame:
    """The yardstick's log p(y | ·) per step for both methods (mean over the images, and each image), long format for
    a native plot: columns step, value, series."""
    rows = []
    for series, name in ((result.cg_log_prob, "classifier guidance"), (result.cfg_log_prob, "CFG (DiT)")):
        for step, values in enumerate(series):
            rows.append((step, float(values.mean()), f"{name}: mean"))
            rows += [(step, float(v), f"{name}: image {i}") for i, v in enumerate(values)]
    return pd.DataFrame(rows, columns=["step", "value", "series"])
