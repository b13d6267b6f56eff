"""What the evaluation harness (``scripts/eval/evaluate.py``) measures: prompt sets, metrics and their 95 % intervals.

Kept apart from the harness because it is a different job: the harness decides *which* samples exist and where
they are made; this module decides what a sample is worth, and is the same on every rank.

- **Prompt sets.** ``single``: the toy world's 24 captions "a {colour} {shape}". ``pairs``: its two-object
  captions ("a red circle on the left and a blue square"), taken from the world's own random two-shape scenes,
  so every prompt is something the world draws. Single-shape prompts are judged right at w = 1 already
  (0.96–0.98), so only compositional prompts leave room to see what a scale buys. ``photos``: a short list of
  everyday prompts for profiles with a real text encoder.
- **Judge metrics (toy).** Single-shape prompts: the toy judge (a CNN never used for guidance) reads the image's
  colour and shape. Two-object prompts: the judge reads each *object*, not the image — the image's foreground
  (pixels clearly off its border colour) is cut into connected components, each is shown to the judge alone on
  the image's own background, and the component the judge calls the prompt's colour is that object. Its shape is
  then the judge's shape for it, and its position is the world's layout rule: the pair anchor (left, right, top,
  bottom) nearest its centroid. A swapped layout therefore costs position, not colour; a missing or merged
  object costs everything for that object. On world images of the same prompts this scores 1.000 (measured in
  ``tests/test_evaluate.py`` and docs/evaluate.md), so a sample's shortfall is the model's, not the metric's.
- **Image metrics.** clipped: share of channel values at 0 or 255 (over-saturation); saturation: mean HSV
  saturation; background (toy): mean brightness of the non-foreground pixels, 0–255 (the world's is ≈ 20).
- **CLIP metrics** (any profile with a ``clip`` role; the toy's tiny CLIP exercises the same code): clip_score,
  the cosine between the prompt's and the image's projected CLIP embeddings; clip_diversity, the mean pairwise
  (1 − cosine) between image embeddings of one prompt's samples.
- **Diversity** (pixels): mean pairwise RMS distance (0–1 pixel scale) between one prompt's samples, as
  ``scripts/eval/toy.py`` defines it.

Intervals: accuracies (values in [0, 1], a mean of per-object hits for pairs) get a Wilson score interval over the
samples — for a [0, 1] variable the Bernoulli variance p(1 − p) is the largest possible, so it is exact for hits
and conservative for fractions, and it stays honest at 0 and 1 where a normal interval collapses to a point.
Every other metric gets a Student t interval of the mean: over samples for per-sample metrics, over prompts for
the per-prompt diversities. Samples of one prompt share the prompt, so treating them as independent over-states
the spread across prompts: the intervals are conservative for this fixed prompt set.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from scipy.stats import t as student_t

from condition.image_embed import text_embeddings
from condition.shapes_world import (
    COLOUR_NAMES,
    PAIR_LAYOUTS,
    POSITIONS,
    SHAPE_NAMES,
    caption_variants,
    plain_caption,
    random_scene,
    render_scene,
    to_tensor_range,
)
from models.architectures.toy_judge import ToyJudge, load_judge
from models.loading.image import CLIP_ROLE, load_clip
from models.profiles import Profile
from models.runtime import Runtime
from reporting.plots import figure_to_image, subplots
from scripts.eval.toy import clip_image_features, foreground
from scripts.shared.training import ASSETS

WORLD_SETS = ("single", "pairs", "compositional")
PROMPT_SETS = (*WORLD_SETS, "photos")
PAIR_PROMPTS_MAX = 240  # distinct two-object captions offered (the world has 1 920 with one position named)
PHOTO_PROMPTS = (
    "a photo of a red cat", "a watercolour painting of a lighthouse at dusk", "a bowl of ramen on a wooden table",
    "an astronaut riding a horse on the moon", "a green vintage car parked in front of a brick wall",
    "a close-up photo of a honeybee on a sunflower", "a snowy mountain village at night, warm lights",
    "a blue teapot next to two white cups", "a portrait of an old fisherman, black and white photo",
    "a futuristic city skyline with flying cars", "a golden retriever puppy playing in autumn leaves",
    "a bicycle leaning against a yellow door", "an oil painting of a stormy sea with a small boat",
    "a plate of sushi seen from above", "a fox standing in a misty forest", "a red umbrella on a rainy street",
)
# The world's pair layouts name positions in pairs: the partner of "left" is "right", and so on.
PARTNER = {a: b for pair in PAIR_LAYOUTS for a, b in (pair, pair[::-1])}
# Where each named object sits: the world's anchors for left/right/top/bottom; the nearest one is its position (the
# world's pair anchors lie 1 px further out on the same axes, so they split the image the same way).
ANCHORS = {name: POSITIONS[name] for name in PARTNER}
MIN_OBJECT_PIXELS = 10  # the world's smallest pair object covers ~27 foreground pixels; specks are not objects
# GenEval's categories (Ghosh et al. 2023) that the shapes world can express. Counting cannot be: the world draws one
# or two objects of different colours and its captions never count ("two red circles" is not in its language).
CATEGORIES = ("single", "two_object", "colour_attribution", "position")
ACCURACIES = ("colour", "shape", "both", "position", "all", *CATEGORIES)
Z95 = 1.959964


@dataclass(frozen=True)
class WorldObject:
    """One object a world prompt asks for; ``position`` is None when the prompt leaves it free."""

    colour: str
    shape: str
    position: str | None = None


@dataclass(frozen=True)
class EvalPrompt:
    """A prompt and, for the toy world's captions, the objects it asks for (empty for free text); ``category``
    marks the compositional suite's prompts (which of :data:`CATEGORIES` they test)."""

    text: str
    objects: tuple[WorldObject, ...] = ()
    category: str = ""


def single_prompts() -> list[EvalPrompt]:
    """The 24 "a {colour} {shape}" captions, ordered so that the first few already vary colour *and* shape
    (index i: colour i mod 6, shape (i + i div 6) mod 4, which visits every pair once)."""
    n_colours, n_shapes = len(COLOUR_NAMES), len(SHAPE_NAMES)
    out = []
    for i in range(n_colours * n_shapes):
        colour, shape = COLOUR_NAMES[i % n_colours], SHAPE_NAMES[(i + i // n_colours) % n_shapes]
        out.append(EvalPrompt(plain_caption(colour, shape), (WorldObject(colour, shape),)))
    return out


def pair_prompts(count: int, seed: int = 0) -> list[EvalPrompt]:
    """``count`` distinct two-object captions of the world's own random scenes, in the form that names the first
    object's position ("a red circle on the left and a blue square"): the second's follows from the layout."""
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    out = []
    while len(out) < count:
        scene = random_scene(rng, num_shapes=2)
        text = caption_variants(scene)[1]
        if text not in seen:
            seen.add(text)
            out.append(EvalPrompt(text, tuple(WorldObject(s.colour, s.shape, s.position) for s in scene.shapes)))
    return out


def compositional_prompts(count: int, seed: int = 1) -> list[EvalPrompt]:
    """The compositional suite, GenEval's categories in the shapes world, interleaved so any prefix holds all of
    them: a single object ("a red circle"); two objects without positions ("a red circle and a blue square"),
    scored for both shapes present (two_object) and each colour on its own shape (colour_attribution); and the same
    two objects with the first one's side named ("a red circle on the left and a blue square"), scored for both
    sides (position: left/right, the pair layout GenEval's position task uses)."""
    singles = single_prompts()
    rng = np.random.default_rng(seed)
    out: list[EvalPrompt] = []
    seen: set[str] = set()
    while len(out) < count:
        out.append(EvalPrompt(singles[(len(out) // 3) % len(singles)].text,
                              singles[(len(out) // 3) % len(singles)].objects, "single"))
        scene = random_scene(rng, num_shapes=2)
        while scene.shapes[0].position not in ("left", "right") or caption_variants(scene)[1] in seen:
            scene = random_scene(rng, num_shapes=2)
        plain, placed = caption_variants(scene)[:2]
        seen.add(placed)
        out.append(EvalPrompt(plain, tuple(WorldObject(s.colour, s.shape) for s in scene.shapes), "two_object"))
        out.append(EvalPrompt(placed, tuple(WorldObject(s.colour, s.shape, s.position) for s in scene.shapes),
                              "position"))
    return out[:count]


def prompt_set_size(name: str) -> int:
    """How many prompts ``--prompts`` may ask of the set."""
    sizes = {"single": len(COLOUR_NAMES) * len(SHAPE_NAMES), "pairs": PAIR_PROMPTS_MAX, "photos": len(PHOTO_PROMPTS),
             "compositional": 3 * len(COLOUR_NAMES) * len(SHAPE_NAMES)}
    return sizes[name]


def prompt_set(name: str, count: int) -> list[EvalPrompt]:
    """The first ``count`` prompts of a set (the order is fixed, so a longer run extends a shorter one)."""
    if name == "single":
        return single_prompts()[:count]
    if name == "pairs":
        return pair_prompts(count)
    if name == "compositional":
        return compositional_prompts(count)
    return [EvalPrompt(text) for text in PHOTO_PROMPTS[:count]]


def world_images(prompt: EvalPrompt, count: int, seed: int) -> np.ndarray:
    """``count`` world images that the prompt truthfully describes (uint8 ``[N, 32, 32, 3]``): the reference.

    Drawn from the world's own scene generator, keeping the scenes whose objects (and named positions) match.
    """
    rng = np.random.default_rng(seed)
    first = prompt.objects[0]
    images = []
    while len(images) < count:
        scene = random_scene(rng, num_shapes=len(prompt.objects), colour=first.colour, shape=first.shape)
        drawn = tuple(WorldObject(s.colour, s.shape, s.position if w.position else None)
                      for s, w in zip(scene.shapes, prompt.objects, strict=True))
        if drawn == prompt.objects:
            images.append(render_scene(scene))
    return np.stack(images)


def as_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` → float ``[1, 3, H, W]`` in [-1, 1], as the judge reads images."""
    return torch.from_numpy(to_tensor_range(image[None]))


def nearest_anchor(cx: float, cy: float) -> str:
    """The world's position name for an object centred at (cx, cy): its layout rule, read backwards."""
    return min(ANCHORS, key=lambda name: (ANCHORS[name][0] - cx) ** 2 + (ANCHORS[name][1] - cy) ** 2)


@dataclass(frozen=True)
class SeenObject:
    """A connected foreground component as the judge reads it alone."""

    colour: str
    shape: str
    position: str
    pixels: int


def seen_objects(judge: ToyJudge, image: np.ndarray) -> list[SeenObject]:
    """Each connected foreground component of ``image``, largest first, judged alone on the image's background.

    A component is kept with a one-pixel margin (the anti-aliased edge the foreground threshold leaves out);
    everything else becomes the image's border median, i.e. a one-shape world image of that object.
    """
    mask = foreground(as_tensor(image))[0]
    labelled, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=int))
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    background = np.median(border, axis=0).astype(np.uint8)
    found = []
    for index in range(1, count + 1):
        component = labelled == index
        if component.sum() < MIN_OBJECT_PIXELS:
            continue
        alone = np.where(ndimage.binary_dilation(component, np.ones((3, 3)))[..., None], image, background)
        colour, shape = judge.predict(as_tensor(alone))
        ys, xs = np.nonzero(component)
        found.append(SeenObject(COLOUR_NAMES[int(colour[0])], SHAPE_NAMES[int(shape[0])],
                                nearest_anchor(float(xs.mean()), float(ys.mean())), int(component.sum())))
    return sorted(found, key=lambda o: -o.pixels)


def judge_scores(judge: ToyJudge, image: np.ndarray, prompt: EvalPrompt) -> dict[str, float]:
    """Single-shape prompts: colour, shape, both (the whole image). Two-object prompts: the share of the two
    objects with the right colour, shape and position, ``all`` (every one right) and how many objects were seen."""
    if len(prompt.objects) == 1:
        colour, shape = judge.predict(as_tensor(image))
        want = prompt.objects[0]
        colour_ok, shape_ok = COLOUR_NAMES[int(colour[0])] == want.colour, SHAPE_NAMES[int(shape[0])] == want.shape
        return {"colour": float(colour_ok), "shape": float(shape_ok), "both": float(colour_ok and shape_ok)}
    seen = seen_objects(judge, image)
    hits = []
    for want in prompt.objects:
        match = next((o for o in seen if o.colour == want.colour), None)  # the largest of that colour
        hits.append((match is not None, match is not None and match.shape == want.shape,
                     match is not None and match.position == want.position))
    colour, shape, position = (sum(h[i] for h in hits) / len(hits) for i in range(3))
    return {"colour": colour, "shape": shape, "position": position,
            "all": float(all(all(h) for h in hits)), "objects": float(len(seen))}


def compositional_scores(judge: ToyJudge, image: np.ndarray, prompt: EvalPrompt) -> dict[str, float]:
    """Every category's hit for a compositional prompt (NaN for the categories it does not test):

    * single: the judge reads the one object's colour and shape;
    * two_object: both named shapes are among the objects seen (colours aside);
    * colour_attribution: the largest object of each named colour has that object's shape;
    * position: the largest object of each named colour sits at its side (the named one, and its partner).
    """
    scores = dict.fromkeys(CATEGORIES, float("nan"))
    if prompt.category == "single":
        scores["single"] = judge_scores(judge, image, prompt)["both"]
        return scores
    seen = seen_objects(judge, image)
    by_colour = {want.colour: next((o for o in seen if o.colour == want.colour), None) for want in prompt.objects}
    if prompt.category == "two_object":
        shapes = [o.shape for o in seen]
        scores["two_object"] = float(all(shapes.count(s) >= [w.shape for w in prompt.objects].count(s)
                                         for s in {w.shape for w in prompt.objects}))
        scores["colour_attribution"] = float(all(by_colour[w.colour] is not None and
                                                 by_colour[w.colour].shape == w.shape for w in prompt.objects))
    else:
        scores["position"] = float(all(by_colour[w.colour] is not None and by_colour[w.colour].position == w.position
                                       for w in prompt.objects))
    return scores


def image_scores(image: np.ndarray, toy: bool) -> dict[str, float]:
    """clipped and HSV saturation for any image; background brightness in the toy world (dark backgrounds)."""
    scores = {"clipped": float(((image == 0) | (image == 255)).mean()),
              "saturation": float(np.asarray(Image.fromarray(image).convert("HSV"))[..., 1].mean() / 255)}
    if toy:
        mask = foreground(as_tensor(image))[0]
        scores["background"] = float(image[~mask].mean()) if (~mask).any() else float("nan")
    return scores


class Meter:
    """Everything one rank needs to score its samples, loaded once: the judge and/or the profile's CLIP."""

    def __init__(self, profile: Profile, runtime: Runtime, families: Sequence[str]) -> None:
        self.families = tuple(families)
        self.judge = load_judge(ASSETS / "judge") if "judge" in self.families else None
        self.clip = load_clip(profile, runtime) if "clip" in self.families else None
        self._text_features: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def score(self, image: np.ndarray, prompt: EvalPrompt) -> tuple[dict[str, float], np.ndarray | None]:
        """Per-sample metrics, and the unit CLIP image embedding (for the per-prompt diversity) when CLIP is on."""
        scores: dict[str, float] = {}
        if self.judge is not None:
            scores.update(compositional_scores(self.judge, image, prompt) if prompt.category
                          else judge_scores(self.judge, image, prompt))
        scores.update(image_scores(image, toy=self.judge is not None))
        embedding = None
        if self.clip is not None:
            picture = torch.nn.functional.normalize(clip_image_features(self.clip, image[None]), dim=-1)
            if prompt.text not in self._text_features:
                text = text_embeddings(self.clip.model, self.clip.tokenizer, [prompt.text]).float()
                self._text_features[prompt.text] = torch.nn.functional.normalize(text, dim=-1)
            scores["clip_score"] = float((picture * self._text_features[prompt.text].to(picture.device)).sum())
            embedding = picture[0].cpu().numpy().astype(np.float32)
        return scores, embedding


def metric_families(profile: Profile, prompt_set_name: str) -> list[str]:
    """The judge for the world's captions, CLIP wherever the profile has one; ``ValueError`` when neither can
    measure adherence (or the judge is missing)."""
    families = []
    if prompt_set_name in WORLD_SETS:
        if not (ASSETS / "judge" / "model.safetensors").exists():
            raise ValueError("the toy judge is missing from assets/toy/judge (scripts/train/toy_judge.py)")
        families.append("judge")
    if profile.has(CLIP_ROLE):
        families.append("clip")
    if not families:
        raise ValueError(f"the profile '{profile.name}' names no '{CLIP_ROLE}' role, so nothing would measure "
                         "adherence to free-text prompts")
    return families


# ----------------------------------------------------------------------------- per prompt, and intervals


def pixel_diversity(images: Sequence[np.ndarray]) -> float:
    """Mean pairwise RMS distance (0–1 pixel scale) between images of one prompt; NaN for fewer than two."""
    if len(images) < 2:
        return float("nan")
    flat = torch.from_numpy(np.stack(images).reshape(len(images), -1).astype(np.float64) / 255)
    distances = torch.cdist(flat, flat) / flat.shape[1] ** 0.5
    return float(distances.sum() / (len(images) * (len(images) - 1)))


def embedding_diversity(embeddings: Sequence[np.ndarray]) -> float:
    """Mean pairwise (1 − cosine) between unit embeddings of one prompt's samples; NaN for fewer than two."""
    if len(embeddings) < 2:
        return float("nan")
    unit = np.stack(embeddings).astype(np.float64)
    cosines = unit @ unit.T
    n = len(embeddings)
    return float(1 - (cosines.sum() - np.trace(cosines)) / (n * (n - 1)))


def wilson_interval(mean: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``mean`` of ``n`` trials (see the module docstring for fractions)."""
    if n == 0:
        return float("nan"), float("nan")
    centre = (mean + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(max(mean * (1 - mean), 0.0) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and Student t 95 % interval of the finite values (NaN bounds for fewer than two)."""
    finite = np.array([v for v in values if math.isfinite(v)], dtype=np.float64)
    if len(finite) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(finite.mean())
    if len(finite) < 2:
        return mean, float("nan"), float("nan")
    half = float(student_t.ppf(0.975, len(finite) - 1) * finite.std(ddof=1) / math.sqrt(len(finite)))
    return mean, mean - half, mean + half


def summarise(per_sample: dict[str, list[float]], per_prompt: dict[str, list[float]]) -> dict[str, float]:
    """``{metric: mean, metric_lo: …, metric_hi: …}`` for one method × scale cell (or the world row)."""
    out: dict[str, float] = {}
    for name, values in [*per_sample.items(), *per_prompt.items()]:
        if name in ACCURACIES and name in per_sample:
            finite = [v for v in values if math.isfinite(v)]
            mean = float(np.mean(finite)) if finite else float("nan")
            lo, hi = wilson_interval(mean, len(finite))
        else:
            mean, lo, hi = mean_interval(values)
        out[name], out[f"{name}_lo"], out[f"{name}_hi"] = mean, lo, hi
    return out


def load_rgb(path: Path) -> np.ndarray:
    """A saved sample as uint8 ``[H, W, 3]``: the summary reads the files, so every rank's samples count alike."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


# ----------------------------------------------------------------------------- summary rows and the plot

NOT_METRICS = ("method", "scale", "prompt_index", "sample", "prompt", "seed", "image")


def cell_summary(rows: list[dict], images: list[np.ndarray], embeddings: list[np.ndarray | None]) -> dict:
    """One summary row (a method × scale cell, or the world row): sample and prompt counts, every per-sample
    metric's mean and interval, and the per-prompt diversities'."""
    per_sample = {k: [r[k] for r in rows] for k in rows[0] if k not in NOT_METRICS}
    per_prompt: dict[str, list[float]] = {"diversity": []}
    if embeddings[0] is not None:
        per_prompt["clip_diversity"] = []
    for p in sorted({r["prompt_index"] for r in rows}):
        mine = [i for i, r in enumerate(rows) if r["prompt_index"] == p]
        per_prompt["diversity"].append(pixel_diversity([images[i] for i in mine]))
        if "clip_diversity" in per_prompt:
            per_prompt["clip_diversity"].append(embedding_diversity([embeddings[i] for i in mine]))
    return {"samples": len(rows), "prompts": len(per_prompt["diversity"]), **summarise(per_sample, per_prompt)}


def world_row(meter: Meter, prompts: list[EvalPrompt], per_prompt: int, seed: int) -> dict:
    """The same metrics on ``per_prompt`` world images of each prompt: what a model drawing the world would score."""
    rows, images, embeddings = [], [], []
    for p, prompt in enumerate(prompts):
        for k, image in enumerate(world_images(prompt, per_prompt, seed=seed + 7919 * p)):
            scores, embedding = meter.score(image, prompt)
            rows.append({"prompt_index": p, "sample": k, **scores})
            images.append(image)
            embeddings.append(embedding)
    return {"method": "world data", "scale": "", **cell_summary(rows, images, embeddings)}


def write_results(out: Path, cells: list[tuple[str, float, list[dict]]], clip: bool, world: dict | None) -> list[dict]:
    """summary.csv and adherence_diversity.png in ``out`` from each (method, scale, rows) cell and the world row;
    images (and CLIP embeddings) are read back from the files the rows name."""
    summary = [world] if world else []
    for method, scale, rows in cells:
        images = [load_rgb(out / r["image"]) for r in rows]
        embeddings = [np.load((out / r["image"]).with_suffix(".clip.npy")) if clip else None for r in rows]
        summary.append({"method": method, "scale": scale, **cell_summary(rows, images, embeddings)})
    write_summary(summary, out / "summary.csv")
    plot(summary, out / "adherence_diversity.png")
    return summary


def write_summary(summary: list[dict], path: Path) -> None:
    """summary.csv: one row per cell; every metric as mean, _lo, _hi (6 significant digits; empty when undefined)."""
    columns = list(dict.fromkeys(k for row in summary for k in row))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for row in summary:
            writer.writerow({k: ("" if not math.isfinite(v) else f"{v:.6g}") if isinstance(v, float) else v
                             for k, v in row.items()})


def read_summary(path: Path) -> list[dict]:
    """summary.csv back as rows: numbers as floats (NaN where empty), ``method`` as written."""
    with path.open(newline="") as f:
        return [{k: v if k == "method" else (float(v) if v else float("nan")) for k, v in row.items()}
                for row in csv.DictReader(f)]


def error_bars(points: list[dict], name: str) -> list[list[float]]:
    """matplotlib's [below, above] distances from each mean to its interval's ends (0 where undefined)."""
    below = [r[name] - r[f"{name}_lo"] for r in points]
    above = [r[f"{name}_hi"] - r[name] for r in points]
    return [[max(v, 0.0) if math.isfinite(v) else 0.0 for v in side] for side in (below, above)]


AXIS_LABELS = {
    "all": "adherence: both objects right (colour, shape, position)",
    "both": "adherence: judge reads the colour and shape asked for",
    "colour_attribution": "adherence: each colour on its own shape (two-object prompts)",
    "clip_score": "adherence: CLIP text–image cosine",
    "diversity": "diversity (mean pairwise RMS within a prompt, 0–1 pixels)",
    "clip_diversity": "diversity (mean pairwise 1 − CLIP image cosine within a prompt)",
}


def plot(summary: list[dict], path: Path) -> None:
    """Adherence vs diversity, one curve per method through its scales (bars: the 95 % intervals; star: world)."""
    y_name = next(k for k in ("all", "both", "colour_attribution", "clip_score") if k in summary[0])
    x_name = "clip_diversity" if y_name == "clip_score" else "diversity"
    fig, axes = subplots(1, (7.0, 5.0))
    ax = axes[0]
    for method in dict.fromkeys(r["method"] for r in summary):
        points = [r for r in summary if r["method"] == method]
        world = method == "world data"
        ax.errorbar([r[x_name] for r in points], [r[y_name] for r in points], xerr=error_bars(points, x_name),
                    yerr=error_bars(points, y_name), marker="*" if world else "o", markersize=12 if world else 5,
                    color="black" if world else None, capsize=2, label=method, linestyle="none" if world else "-")
        for r in [] if world else points:
            ax.annotate(f"{r['scale']:g}", (r[x_name], r[y_name]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_xlabel(AXIS_LABELS[x_name])
    ax.set_ylabel(AXIS_LABELS[y_name])
    ax.set_title("adherence vs diversity (labels: scale; bars: 95 % intervals)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    figure_to_image(fig).save(path)
