"""Guidance distillation in the exact 2D world, measured (Meng et al. 2023, "On Distillation of Guided Diffusion
Models", stage one).

Three ways to take a CFG step ε̃ = ε_u + w (ε_c − ε_u) on the playground's mixture, sampled through the one loop from
the same noise:

- **exact CFG**: the mixture's closed-form ε_u and ε_c, two evaluations per step (the exact teacher);
- **teacher network**: a learned class-conditional ε-network with label dropout, CFG from its two branches (two
  evaluations per step): the fair baseline for a learned model;
- **student**: the distilled network ε̂(x_t, t, c, w) trained to match the exact teacher's ε̃ for w ∈ [0, 12], ONE
  evaluation per step, sampled with the rule ``"none"``.

Each is compared by Székely's energy distance to a large exact-guided reference sample at the same w (other noise);
the exact CFG run's own distance to it is the floor that finite samples alone give. The learned methods are also
compared to the exact-CFG run from the *same* noise ("paired"): the sample-to-sample fluctuation is then shared and
cancels, so that distance resolves model errors far below the floor (at the cost of depending on one noise draw).
The ε errors against the exact guided ε on forward-process draws say where the distances come from: the teacher
network's CFG error grows like w² (its branch errors are amplified by w), the student's is whatever it failed to fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from experiments.puncond import training_alpha_bars, view_extent
from guidance.sampler import Denoiser, ModelCall
from models.architectures.gmm2d import GaussianMixture2D, GMMDenoiser, default_mixture
from models.architectures.guided_student_2d import GuidedStudent2D, GuidedStudentDenoiser
from models.architectures.score_mlp import LearnedScoreDenoiser, ScoreMLP
from pipelines.playground import PlaygroundRun, energy_distance, run_playground
from reporting.playground import draw_samples
from reporting.plots import figure_to_image, subplots

SCALES = (0.0, 1.0, 2.0, 4.0, 7.0, 12.0)
METHODS = ("exact_cfg", "teacher_net_cfg", "student")
METHOD_LABELS = {"exact_cfg": "exact CFG (2 exact calls)", "teacher_net_cfg": "teacher network CFG (2 calls)",
                 "student": "distilled student (1 call)"}
SAMPLING = dict(sampler="ddpm", steps=200, num_samples=2000, seed=0)
REFERENCE_SAMPLES = 10_000
REFERENCE_SEED = 10_000  # other noise than the compared runs: the exact run's distance to it is the floor
ERROR_SEED = 12345
DISTANCE_CHUNK = 1000  # rows of the pairwise-distance matrix at a time: 10 000² pairs would need 800 MB at once


def exact_eps_rows(mixture: GaussianMixture2D, x: Tensor, alpha_bar: Tensor, labels: Tensor | None = None) -> Tensor:
    """The mixture's exact ε(x_t, t) (or ε(x_t, t | c) with a class per row) with a noise level ᾱ per row.

    ``GaussianMixture2D.eps`` takes one ᾱ for the whole batch; training draws t per sample, so this is the same
    closed form vectorised over rows: ε = −√(1−ᾱ) Σ_k r_k(x) · (−(x − √ᾱ μ_k) / v_k), v_k = ᾱ s_k² + 1 − ᾱ, with the
    responsibilities r_k restricted to the components of class c when ``labels`` is given."""
    dtype = x.dtype
    a = alpha_bar.to(dtype)[:, None]  # [N, 1]
    var = a * mixture.stds.to(dtype)[None] ** 2 + (1 - a)  # [N, K]
    diff = x[:, None, :] - a.sqrt()[..., None] * mixture.means.to(dtype)[None]  # [N, K, 2]
    logits = mixture.weights.to(dtype).log()[None] - 0.5 * (diff**2).sum(-1) / var - torch.log(2 * math.pi * var)
    if labels is not None:
        logits = logits.masked_fill(mixture.labels[None] != labels[:, None], -math.inf)
    resp = torch.softmax(logits, dim=1)
    score = (resp[..., None] * (-diff / var[..., None])).sum(1)
    return -(1 - a).sqrt() * score


def exact_guided_eps(mixture: GaussianMixture2D, x: Tensor, alpha_bar: Tensor, labels: Tensor,
                     scale: Tensor | float) -> Tensor:
    """The exact teacher's CFG prediction ε̃ = ε_u + w (ε_c − ε_u) (Ho & Salimans 2022), w per row or shared:
    the distillation target of Meng et al. 2023, eq. (3)'s stage-one objective with the teacher in closed form."""
    uncond = exact_eps_rows(mixture, x, alpha_bar)
    cond = exact_eps_rows(mixture, x, alpha_bar, labels)
    w = torch.as_tensor(scale, dtype=x.dtype)
    w = w[:, None] if w.ndim == 1 else w
    return uncond + w * (cond - uncond)


@dataclass
class CallCounter:
    """A denoiser that counts what the loop asks of the model: forward passes and rows (one row = one evaluation
    of one sample in one branch). Rows per sample is the cost CFG doubles and distillation halves."""

    denoiser: Denoiser
    forward_passes: int = 0
    rows: int = 0

    def __call__(self, x: Tensor, t: Tensor, call: ModelCall) -> Tensor:
        self.forward_passes += 1
        self.rows += x.shape[0]
        return self.denoiser(x, t, call)

    def evaluations_per_sample(self, num_samples: int) -> float:
        return self.rows / num_samples


def pairwise_mean(a: Tensor, b: Tensor, chunk: int = DISTANCE_CHUNK) -> float:
    """E‖A − B‖ over all pairs, in row chunks so a large reference does not need the full matrix in memory."""
    total = sum(float(torch.cdist(a[i:i + chunk], b).sum()) for i in range(0, a.shape[0], chunk))
    return total / (a.shape[0] * b.shape[0])


def energy_distance_to(samples: Tensor, reference: Tensor, reference_self: float | None = None) -> float:
    """Székely's energy distance 2E‖A−B‖ − E‖A−A'‖ − E‖B−B'‖ (V-statistic, as ``pipelines.playground``'s), chunked;
    ``reference_self`` = E‖B−B'‖ when already known (it is the same for every method compared to one reference)."""
    ref_self = pairwise_mean(reference, reference) if reference_self is None else reference_self
    return 2 * pairwise_mean(samples, reference) - pairwise_mean(samples, samples) - ref_self


@dataclass
class Reference:
    samples: Tensor
    self_distance: float  # E‖B − B'‖

    @classmethod
    def exact(cls, scale: float, target_class: str, *, num_samples: int = REFERENCE_SAMPLES,
              seed: int = REFERENCE_SEED, sampler: str = "ddpm", steps: int = 200,
              mixture: GaussianMixture2D | None = None) -> Reference:
        """A large exact-guided sample at w = ``scale`` from other noise than the compared runs."""
        run = run_playground("cfg", scale, target_class=target_class, sampler=sampler, steps=steps,
                             num_samples=num_samples, seed=seed, mixture=mixture)
        return cls(run.samples, pairwise_mean(run.samples, run.samples))

    def distance(self, samples: Tensor) -> float:
        return energy_distance_to(samples, self.samples, self.self_distance)


@dataclass
class MethodRun:
    run: PlaygroundRun
    counter: CallCounter
    energy_distance: float | None  # to the large exact reference (other noise)
    paired_distance: float | None = None  # to the exact-CFG run from the same noise

    def summary(self) -> dict:
        samples = self.run.samples.shape[0]
        return {"energy_distance": None if self.energy_distance is None else round(self.energy_distance, 6),
                "paired_energy_distance": None if self.paired_distance is None else round(self.paired_distance, 6),
                "class_fraction": self.run.stats["class_fraction"],
                "evaluations_per_sample": self.counter.evaluations_per_sample(samples),
                "forward_passes": self.counter.forward_passes}


def method_denoisers(method: str, student: GuidedStudent2D, teacher: ScoreMLP, label: int, scale: float,
                     mixture: GaussianMixture2D) -> tuple[str, Denoiser]:
    """The registry rule and the denoiser of one method: CFG over two branches, or the student's one."""
    if method == "exact_cfg":
        return "cfg", GMMDenoiser(mixture, label, training_alpha_bars())
    if method == "teacher_net_cfg":
        return "cfg", LearnedScoreDenoiser(teacher, label)
    if method == "student":
        return "none", GuidedStudentDenoiser(student, label, scale)
    raise ValueError(f"method must be one of {METHODS}; got {method!r}")


def run_method(method: str, student: GuidedStudent2D, teacher: ScoreMLP, scale: float,
               reference: Reference | None = None, *, paired_with: Tensor | None = None, target_class: str = "red",
               sampler: str = "ddpm", steps: int = 200, num_samples: int = 2000, seed: int = 0,
               mixture: GaussianMixture2D | None = None, student_scale: float | None = None) -> MethodRun:
    """One method at w = ``scale`` through the playground's loop, its calls counted; its energy distance to
    ``reference`` (a large exact sample from other noise) and to ``paired_with`` (the exact-CFG samples from the
    same noise: finite-sample fluctuations are shared, so this one resolves much smaller model errors).

    ``student_scale``: the w handed to the student when it should differ from the reference's (a deliberately wrong
    w, to show that the comparison can fail)."""
    mixture = mixture or default_mixture()
    label = mixture.class_index(target_class)
    given = scale if student_scale is None else student_scale
    rule, denoiser = method_denoisers(method, student, teacher, label, given, mixture)
    counter = CallCounter(denoiser)
    run = run_playground(rule, scale, target_class=target_class, sampler=sampler, steps=steps,
                         num_samples=num_samples, seed=seed, mixture=mixture, denoiser=counter)
    return MethodRun(run, counter, None if reference is None else reference.distance(run.samples),
                     None if paired_with is None else energy_distance(run.samples, paired_with))


@torch.no_grad()
def eps_errors(student: GuidedStudent2D, teacher: ScoreMLP, scales: tuple[float, ...] = SCALES, *,
               points: int = 20_000, seed: int = ERROR_SEED,
               mixture: GaussianMixture2D | None = None) -> dict[str, dict[str, float]]:
    """Mean squared error per coordinate against the exact guided ε̃ at each w, for the student (one call) and the
    teacher network's CFG (two calls), on the same forward-process draws: (x0, c) ~ p(x, c), t uniform, x_t noised."""
    mixture = mixture or default_mixture()
    alpha_bars = training_alpha_bars()
    generator = torch.Generator().manual_seed(seed)
    x0, labels = mixture.sample_labelled(points, generator)
    t = torch.randint(0, len(alpha_bars), (points,), generator=generator)
    a = alpha_bars[t]
    x_t = a.sqrt()[:, None] * x0 + (1 - a).sqrt()[:, None] * torch.randn(x0.shape, generator=generator,
                                                                         dtype=x0.dtype)
    teacher_cond = teacher(x_t, t, labels).double()
    teacher_uncond = teacher(x_t, t, torch.full_like(labels, teacher.config.null_label)).double()
    out = {}
    for scale in scales:
        target = exact_guided_eps(mixture, x_t, a, labels, scale)
        student_eps = student(x_t, t, labels, torch.full((points,), float(scale))).double()
        teacher_eps = teacher_uncond + scale * (teacher_cond - teacher_uncond)
        out[f"{scale:g}"] = {"student": round(float((student_eps - target).pow(2).mean()), 6),
                             "teacher_net_cfg": round(float((teacher_eps - target).pow(2).mean()), 6)}
    return out


@dataclass
class DistillComparison:
    """Every method at every (w, class), with the JSON-ready summary and the figure."""

    scales: tuple[float, ...]
    classes: tuple[str, ...]
    sampling: dict
    reference_samples: int
    runs: dict[tuple[float, str, str], MethodRun] = field(default_factory=dict)  # (w, class, method)
    errors: dict[str, dict[str, float]] = field(default_factory=dict)

    def distance(self, scale: float, method: str, paired: bool = False) -> float:
        """Mean over the target classes of the energy distance to the exact reference (``paired``: to the exact-CFG
        run from the same noise)."""
        return float(np.mean([getattr(self.runs[scale, name, method], "paired_distance" if paired else
                                      "energy_distance") for name in self.classes]))

    def summary(self) -> dict:
        rows = []
        for scale in self.scales:
            distances = {m: round(self.distance(scale, m), 6) for m in METHODS}
            ratio = distances["student"] / distances["teacher_net_cfg"]
            paired = {m: round(self.distance(scale, m, paired=True), 6) for m in METHODS[1:]}
            rows.append({
                "w": scale, "energy_distance": distances,
                "student_over_teacher_net": round(ratio, 3), "within_2x": bool(ratio <= 2.0),
                "paired_energy_distance": paired,
                "paired_student_over_teacher_net": round(paired["student"] / paired["teacher_net_cfg"], 3),
                "class_fraction": {m: round(float(np.mean([self.runs[scale, n, m].run.stats["class_fraction"]
                                                           for n in self.classes])), 4) for m in METHODS},
                "per_class": {n: {m: self.runs[scale, n, m].summary() for m in METHODS} for n in self.classes},
                "eps_mse": self.errors.get(f"{scale:g}", {}),
            })
        first = self.runs[self.scales[0], self.classes[0], "student"]
        steps = first.counter.forward_passes
        calls = {m: self.runs[self.scales[0], self.classes[0], m].summary()["evaluations_per_sample"]
                 for m in METHODS}
        return {"scales": list(self.scales), "classes": list(self.classes), "sampling": self.sampling,
                "reference_samples": self.reference_samples, "rows": rows,
                "model_evaluations_per_sample": calls, "steps": steps,
                "target_holds_at_every_w": all(r["within_2x"] for r in rows)}


def compare(student: GuidedStudent2D, teacher: ScoreMLP, scales: tuple[float, ...] = SCALES,
            classes: tuple[str, ...] | None = None, *, sampler: str = "ddpm", steps: int = 200,
            num_samples: int = 2000, seed: int = 0, reference_samples: int = REFERENCE_SAMPLES,
            error_points: int = 20_000, progress=None) -> DistillComparison:
    """Every method at every w and class from the same noise ``seed``; references from ``REFERENCE_SEED``.
    ``progress``: an optional callable wrapping the iterable of (w, class) pairs (tqdm)."""
    mixture = default_mixture()
    classes = tuple(classes or mixture.class_names)
    sampling = dict(sampler=sampler, steps=steps, num_samples=num_samples, seed=seed)
    result = DistillComparison(tuple(scales), classes, sampling, reference_samples)
    pairs = [(scale, name) for scale in scales for name in classes]
    for scale, name in progress(pairs) if progress else pairs:
        reference = Reference.exact(scale, name, num_samples=reference_samples, sampler=sampler, steps=steps,
                                    mixture=mixture)
        exact = run_method("exact_cfg", student, teacher, scale, reference, target_class=name, mixture=mixture,
                           **sampling)
        exact.paired_distance = 0.0  # itself
        result.runs[scale, name, "exact_cfg"] = exact
        for method in METHODS[1:]:
            result.runs[scale, name, method] = run_method(method, student, teacher, scale, reference,
                                                          paired_with=exact.run.samples, target_class=name,
                                                          mixture=mixture, **sampling)
    if error_points:
        result.errors = eps_errors(student, teacher, tuple(scales), points=error_points, mixture=mixture)
    return result


ROW_MARGINS = {"left": 0.04, "right": 0.99, "bottom": 0.08, "top": 0.86, "wspace": 0.15}


def plot_comparison(result: DistillComparison, shown_scales: tuple[float, ...] = (1.0, 4.0, 12.0),
                    target_class: str | None = None) -> Image.Image:
    """Rows of samples (exact CFG | teacher network CFG | student, same noise) at a few w, over the contours of
    p(x) p(c|x)^w, then the energy distance to the exact reference vs w and the ε error vs w."""
    name = target_class or result.classes[0]
    shown = [s for s in shown_scales if s in result.scales] or list(result.scales[:3])
    images = []
    for scale in shown:
        fig, axes = subplots(len(METHODS), (13.5, 4.7), ROW_MARGINS)
        # One view for the row, wide enough for where the worst method's samples went (up to a limit).
        extent = view_extent(torch.cat([result.runs[scale, name, m].run.samples for m in METHODS]))
        for ax, method in zip(axes, METHODS, strict=True):
            method_run = result.runs[scale, name, method]
            evaluations = method_run.counter.evaluations_per_sample(method_run.run.samples.shape[0])
            draw_samples(ax, method_run.run.mixture, method_run.run.samples, method_run.run.label, scale,
                         f"{METHOD_LABELS[method]}, w={scale:g}, target {name!r}\n"
                         f"energy distance to exact ref. {method_run.energy_distance:.4f}, "
                         f"{evaluations:g} evaluations/sample", extent)
        images.append(figure_to_image(fig))
    fig, (ax_ed, ax_err) = subplots(2, (13.5, 4.4))
    scales = np.asarray(result.scales)
    for method, style in zip(METHODS, ("k:", "o-", "s-"), strict=True):
        values = [result.distance(s, method) for s in result.scales]
        label = "exact CFG (floor: exact vs exact, other noise)" if method == "exact_cfg" else METHOD_LABELS[method]
        ax_ed.plot(scales, values, style, label=label)
    ax_ed.plot(scales, [2 * result.distance(s, "teacher_net_cfg") for s in result.scales], "--", color="C0",
               lw=1, alpha=0.6, label="2 × teacher network (the target for the student)")
    for method, colour in (("teacher_net_cfg", "C0"), ("student", "C1")):
        ax_ed.plot(scales, [result.distance(s, method, paired=True) for s in result.scales], "x:", color=colour,
                   lw=1, label=f"{METHOD_LABELS[method]}: to exact CFG from the same noise")
    ax_ed.set_yscale("log")
    ax_ed.set_xlabel("guidance scale w")
    ax_ed.set_title(f"energy distance to {result.reference_samples} exact-guided samples "
                    f"(mean over {len(result.classes)} classes)", fontsize=9)
    if result.errors:
        for method, style in (("teacher_net_cfg", "o-"), ("student", "s-")):
            ax_err.plot(scales, [result.errors[f"{s:g}"][method] for s in result.scales], style,
                        label=METHOD_LABELS[method])
        ax_err.set_yscale("log")
    ax_err.set_xlabel("guidance scale w")
    ax_err.set_title("mean squared error vs the exact guided ε̃ = ε_u + w (ε_c − ε_u) (forward-process draws)",
                     fontsize=9)
    for ax in (ax_ed, ax_err):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    images.append(figure_to_image(fig))
    width = max(im.width for im in images)
    canvas = Image.new("RGB", (width, sum(im.height for im in images)), "white")
    top = 0
    for im in images:
        canvas.paste(im, (0, top))
        top += im.height
    return canvas
