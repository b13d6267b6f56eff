"""Classifier-guided sampling (Dhariwal & Nichol 2021) through the one sampler loop.

Any model pair with the :class:`GuidedModels` interface works: the ImageNet ADM pair
(``models.loading.adm.ADMPair``) and the toy profile's UNet + world classifiers
(``pipelines.toy_guidance.ToyGuidedModels``). Notebook use::

    from models.loading.adm import load_adm_pair
    from pipelines.classifier_guidance import classifier_guided_sample
    pair = load_adm_pair(profile, "64x64")
    result = classifier_guided_sample(pair, class_id=207, classifier_scale=1.0, steps="ddim25", sampler="ddim",
                                      seed=0)
    result.guided.images            # [N, 3, H, W] in [0, 1]
    result.guided.log_prob          # [steps, N] log p(y | x_t) of the noise-aware classifier

``compare_clean`` samples the same seed again, guided by a classifier trained on clean images only
(ImageNet: ResNet-50; toy: the clean world classifier) applied to the predicted x0, which is how one
would guide without a noise-aware classifier.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from condition.labels import check_class_id
from guidance.sampler import ClassifierContext, ClassifierGuidance, SampleResult, StepState, initial_noise
from models.adapters.adm_schedule import space_timesteps
from models.loading.clean_classifier import imagenet_clean_guide, load_clean_classifier
from models.runtime import Runtime, cpu_generator, pick_runtime

SAMPLERS = ("ddim", "ddpm")
TOP_K = 5


# ----------------------------------------------------------------------------- what a guided model pair offers


class GuidedSampling(Protocol):
    """One configured run: the loop's classifier guidance, and the t the networks see per index."""

    classifier: ClassifierGuidance
    timestep_map: Tensor

    def run(self, noise: Tensor, *, generator: torch.Generator | None = None, **kwargs: Any) -> SampleResult: ...


class GuidedModels(Protocol):
    """A diffusion model with a noise-aware classifier over ``class_names``."""

    classifier: nn.Module  # noise-aware: logits = classifier(x_t, t)
    clean_guide: Callable[[Tensor], Tensor] | None  # x̂0 in [-1, 1] → logits of a clean classifier (None: ResNet-50)
    clean_label: str

    @property
    def diffusion_module(self) -> nn.Module: ...  # the network each step calls (hooks count and time it)

    @property
    def image_size(self) -> int: ...

    @property
    def diffusion_steps(self) -> int: ...

    @property
    def class_names(self) -> Sequence[str]: ...

    @property
    def diffusion_source(self) -> str: ...

    @property
    def classifier_source(self) -> str: ...

    def describe(self) -> dict[str, Any]: ...

    def sampling_setup(self, y: Tensor, scale: float, respacing: str, use_ddim: bool) -> GuidedSampling: ...


# ----------------------------------------------------------------------------- validation


def parse_steps(steps: str | int, diffusion_steps: int = 1000, max_steps: int | None = None) -> tuple[str, int]:
    """A respacing string (``"250"``, ``"ddim25"``, ``"10,5"``) and the number of steps it keeps."""
    text = str(steps).strip().lower().replace(" ", "")
    usage = f'steps must be a respacing such as "250", "100", "ddim25" or "10,5,5" (at most {diffusion_steps})'
    if not text or len(text) > 64:
        raise ValueError(f"{usage}; got {str(steps)[:80]!r}")
    body = text.removeprefix("ddim")
    parts = body.split(",") if not text.startswith("ddim") else [body]
    if not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise ValueError(f"{usage}; got {str(steps)[:80]!r}")
    try:
        kept = len(space_timesteps(diffusion_steps, text))
    except ValueError as e:
        raise ValueError(f"steps {str(steps)[:80]!r} cannot respace {diffusion_steps} steps: {e}") from None
    if max_steps is not None and kept > max_steps:
        raise ValueError(f"steps {text!r} keeps {kept} steps; this server allows at most {max_steps}")
    return text, kept


def check_scale(classifier_scale: Any, high: float | None = None) -> float:
    try:
        s = float(classifier_scale)
    except (TypeError, ValueError):
        raise ValueError(f"classifier_scale must be a number, got {classifier_scale!r}") from None
    if not math.isfinite(s) or s < 0 or (high is not None and s > high):
        top = f"{high:g}" if high is not None else "any finite value"
        raise ValueError(f"classifier_scale must be between 0 and {top}, got {classifier_scale!r}")
    return s


# ----------------------------------------------------------------------------- classifiers as log p(y | ·)


LogitsFn = Callable[[Tensor, Tensor, ClassifierContext], Tensor]


class RecordingLogProb:
    """log p(y | ·) from a logits function, remembering the top-k classes at each step.

    The loop calls it once per step (inside its autograd pass), so recording here costs nothing extra.
    """

    def __init__(self, logits: LogitsFn, y: Tensor, k: int = TOP_K):
        self.logits, self.y, self.k = logits, y.long(), k
        self.top: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, x: Tensor, t: Tensor, ctx: ClassifierContext) -> Tensor:
        log_probs = F.log_softmax(self.logits(x, t, ctx).float(), dim=-1)
        top = log_probs.detach().topk(self.k, dim=-1)
        self.top[ctx.step_index] = (top.indices.cpu().numpy(), top.values.cpu().numpy())
        return log_probs[torch.arange(x.shape[0], device=x.device), self.y.to(x.device).expand(x.shape[0])]

    def top_arrays(self, num_steps: int) -> tuple[np.ndarray, np.ndarray]:
        ids = np.stack([self.top[i][0] for i in range(num_steps)])
        values = np.stack([self.top[i][1] for i in range(num_steps)])
        return ids, values


def noise_aware_logits(classifier: nn.Module, timestep_map: Tensor) -> LogitsFn:
    """The ADM classifier sees x_t and the original-scale timestep of respaced index t."""

    def logits(x: Tensor, t: Tensor, ctx: ClassifierContext | None = None) -> Tensor:
        ts = timestep_map[int(t)].expand(x.shape[0]).to(x.device)
        return classifier(x.float(), ts)  # ADM casts to its torso dtype itself; fp16 UNets hand it fp16

    return logits


def clean_logits(guide: Callable[[Tensor], Tensor]) -> LogitsFn:
    """A classifier of clean images judging the predicted x0 rather than x_t.

    ε is the loop's (detached) prediction, so the gradient reaches x_t only through x0's linear
    dependence on it: ∇ₓ = ∇ₓ₀ / √ᾱ, as if the classifier's input were a deterministic denoise.
    """

    def logits(x: Tensor, t: Tensor, ctx: ClassifierContext) -> Tensor:
        abar = ctx.alpha_bar.to(x.device, torch.float32)
        return guide((x.float() - (1 - abar).sqrt() * ctx.eps.detach().float()) / abar.sqrt())

    return logits


# ----------------------------------------------------------------------------- sampling


@dataclass
class GuidedRun:
    """One sampling run and what its guiding classifier thought at every step."""

    guide: str  # "noise-aware" (classifier on x_t) or "clean" (a clean classifier on the predicted x0)
    images: Tensor  # [N, 3, H, W] in [0, 1], float32 on the CPU
    timesteps: np.ndarray  # [steps] original-scale t the networks saw
    log_prob: np.ndarray  # [steps, N] the guiding classifier's log p(y | its input)
    noise_aware_log_prob: np.ndarray  # [steps, N] the noise-aware classifier's log p(y | x_t)
    top5_ids: np.ndarray  # [steps, N, 5] the guiding classifier's top classes
    top5_log_prob: np.ndarray  # [steps, N, 5]
    final_log_prob: np.ndarray  # [N] noise-aware log p(y | x_0) of the final images
    seconds: float
    final_clean_log_prob: np.ndarray | None = None  # [N] the clean classifier's log p(y | final image), if run


@dataclass
class ClassifierGuidanceResult:
    guided: GuidedRun
    clean: GuidedRun | None
    params: dict[str, Any] = field(default_factory=dict)
    class_names: Sequence[str] = ()
    clean_label: str = "clean classifier"

    def metadata(self) -> dict[str, Any]:
        """JSON-ready parameters and per-run summaries (final log-probs, top-1 names, timing)."""
        runs = {}
        for run in (self.guided, self.clean):
            if run is None:
                continue
            top1 = run.top5_ids[-1, :, 0].tolist() if len(run.top5_ids) else []
            summary = {
                "guide": run.guide,
                "final_log_p_target": [round(float(v), 4) for v in run.final_log_prob],
                "last_step_log_p_target": [round(float(v), 4) for v in run.log_prob[-1]],
                "last_step_top1": [self.class_names[i] for i in top1],
                "seconds": round(run.seconds, 3),
            }
            if run.final_clean_log_prob is not None:
                summary["final_clean_classifier_log_p_target"] = [round(float(v), 4)
                                                                  for v in run.final_clean_log_prob]
            runs[run.guide] = summary
        return {**self.params, "runs": runs}


def classifier_guided_sample(
    models: GuidedModels,
    *,
    class_id: int,
    classifier_scale: float,
    steps: str = "ddim25",
    sampler: str = "ddim",
    seed: int = 0,
    num_images: int = 1,
    callback: Callable[[StepState], None] | None = None,
    compare_clean: bool = False,
    clean_guide: Callable[[Tensor], Tensor] | None = None,
    clean_callback: Callable[[StepState], None] | None = None,
    max_steps: int | None = None,
    runtime: Runtime | None = None,
) -> ClassifierGuidanceResult:
    """Sample ``num_images`` of class ``class_id`` guided by the pair's noise-aware classifier.

    ``steps`` is a respacing string; ``sampler="ddpm"`` takes ancestral steps (mean shifted by
    s·Σ·∇log p), ``"ddim"`` deterministic DDIM (ε shifted by −√(1−ᾱ)·s·∇log p). A class-conditional
    diffusion model is conditioned on the same class and guided on top. With ``compare_clean`` the
    same seed is sampled again, guided by ``clean_guide`` (x̂0 in [-1, 1] → logits; default: the
    pair's own clean classifier, else the ImageNet ResNet-50) on the predicted x0. Noise comes from
    a CPU generator: one seed, one result.
    """
    names = models.class_names
    class_id = check_class_id(class_id, len(names))
    scale = check_scale(classifier_scale)
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}; got {str(sampler)[:80]!r}")
    respacing, num_steps = parse_steps(steps, models.diffusion_steps, max_steps)
    if isinstance(num_images, bool) or int(num_images) != num_images or num_images < 1:
        raise ValueError(f"num_images must be a whole number ≥ 1, got {num_images!r}")
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a whole number ≥ 0, got {seed!r}")
    runtime = runtime or pick_runtime()
    if compare_clean and clean_guide is None:
        clean_guide = models.clean_guide or imagenet_clean_guide(load_clean_classifier(runtime))

    params = dict(
        class_id=class_id, class_name=names[class_id], classifier_scale=scale, steps=respacing,
        num_steps=num_steps, sampler=sampler, seed=int(seed), num_images=int(num_images),
        compare_clean=bool(compare_clean), **models.describe(),
    )
    y = torch.full((int(num_images),), class_id, dtype=torch.long)

    def setup() -> GuidedSampling:
        return models.sampling_setup(y, scale, respacing, sampler == "ddim")

    guided = _run(setup(), "noise-aware", models, y, int(seed), runtime, callback, None)
    clean = None
    if compare_clean:
        clean = _run(setup(), "clean", models, y, int(seed), runtime, clean_callback or callback, clean_guide)
        for run in (guided, clean):
            run.final_clean_log_prob = _final_clean(clean_guide, run.images.to(runtime.device), y)
    return ClassifierGuidanceResult(guided, clean, params, tuple(names), models.clean_label)


def _run(
    setup: GuidedSampling, guide: str, models: GuidedModels, y: Tensor, seed: int, runtime: Runtime,
    callback: Callable[[StepState], None] | None, clean_guide: Callable[[Tensor], Tensor] | None,
) -> GuidedRun:
    timestep_map = setup.timestep_map
    aware = noise_aware_logits(models.classifier, timestep_map)
    logits = aware if clean_guide is None else clean_logits(clean_guide)
    recorder = RecordingLogProb(logits, y)
    base: ClassifierGuidance = setup.classifier
    setup.classifier = ClassifierGuidance(recorder, base.scale, mode=base.mode, variance=base.variance)

    # Along the clean-guided path, also ask the noise-aware classifier, so both runs share one yardstick.
    aware_log_p: dict[int, np.ndarray] = {}

    def on_step(state: StepState) -> None:
        if clean_guide is not None:
            with torch.no_grad():
                aware_log_p[state.step_index] = _pick(aware(state.x, state.t), y)
        if callback is not None:
            callback(state)

    shape = (len(y), 3, models.image_size, models.image_size)
    generator = cpu_generator(seed)
    # ADM casts its input to its torso's dtype itself; a diffusers UNet needs noise in its own dtype (fp16 on CUDA).
    noise = initial_noise(shape, generator, runtime.device, getattr(models, "sample_dtype", torch.float32))
    start = time.perf_counter()
    result = setup.run(noise, generator=generator, callback=on_step)
    seconds = time.perf_counter() - start

    log_prob = result.series("log_prob")
    n = len(result.trace)
    top_ids, top_values = recorder.top_arrays(n)
    aware_series = log_prob if clean_guide is None else np.stack([aware_log_p[i] for i in range(n)])
    images = ((result.sample.float().clamp(-1, 1) + 1) / 2).cpu()
    with torch.no_grad():
        final_lp = _pick(aware(result.sample.float(), torch.tensor(0)), y)
    timesteps = np.array([int(timestep_map[int(row["t"])]) for row in result.trace])
    return GuidedRun(guide, images, timesteps, log_prob, aware_series, top_ids, top_values, final_lp, seconds)


def _final_clean(guide: Callable[[Tensor], Tensor], images: Tensor, y: Tensor) -> np.ndarray:
    with torch.no_grad():
        return _pick(guide(images * 2 - 1), y)


def _pick(logits: Tensor, y: Tensor) -> np.ndarray:
    """log p(y_b | ·) per row, on whatever device the logits live."""
    log_probs = F.log_softmax(logits.float(), dim=-1)
    return log_probs.gather(1, y.to(log_probs.device).view(-1, 1)).squeeze(1).cpu().numpy()
