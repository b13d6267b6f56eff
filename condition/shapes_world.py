"""A procedural toy world of coloured shapes, so every tab can run offline on a CPU.

Each sample is a 32×32 RGB image on a dark background holding one or two filled
shapes, together with a caption, a class label and the :class:`Scene` that made it.
Everything is a pure function of a ``numpy`` generator, so one seed always gives the
same images, captions and labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 32
# Shapes are drawn at this many times the final size and box-filtered down, which gives
# anti-aliased edges without depending on a drawing library's AA mode.
_SUPERSAMPLE = 4

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 50),
    "blue": (50, 80, 245),
    "yellow": (235, 225, 40),
    "magenta": (225, 45, 225),
    "cyan": (40, 220, 225),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
SHAPE_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
POSITIONS: dict[str, tuple[float, float]] = {
    "centre": (16.0, 16.0),
    "left": (9.0, 16.0),
    "right": (23.0, 16.0),
    "top": (16.0, 9.0),
    "bottom": (16.0, 23.0),
}
POSITION_NAMES: tuple[str, ...] = tuple(POSITIONS)
POSITION_PHRASES: dict[str, str] = {
    "centre": "in the centre",
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
}
# Radius ranges in pixels of the final image; two-shape scenes use the small end so
# the shapes never overlap.
SIZES: dict[str, tuple[float, float]] = {"small": (4.0, 5.5), "large": (7.0, 9.5)}
SIZE_NAMES: tuple[str, ...] = tuple(SIZES)
PAIR_LAYOUTS: tuple[tuple[str, str], ...] = (("left", "right"), ("top", "bottom"))
_PAIR_ANCHORS = {"left": (8.0, 16.0), "right": (24.0, 16.0), "top": (16.0, 8.0), "bottom": (16.0, 24.0)}
_PAIR_RADIUS = (4.0, 6.5)

CLASS_NAMES: tuple[str, ...] = tuple(f"{c} {s}" for c in COLOUR_NAMES for s in SHAPE_NAMES)
NUM_CLASSES = len(CLASS_NAMES)
NO_LABEL = -1  # two-shape scenes have no single class

# Every word a caption can contain; the toy tokenizer is built from this list.
VOCABULARY: tuple[str, ...] = (
    ("a", "and", "on", "at", "in", "the") + COLOUR_NAMES + SHAPE_NAMES + tuple(POSITION_NAMES) + SIZE_NAMES
)


def class_index(colour: str, shape: str) -> int:
    """Index into :data:`CLASS_NAMES` of a (colour, shape) pair."""
    return COLOUR_NAMES.index(colour) * len(SHAPE_NAMES) + SHAPE_NAMES.index(shape)


def class_parts(index: int) -> tuple[str, str]:
    """The (colour, shape) of a class index."""
    return COLOUR_NAMES[index // len(SHAPE_NAMES)], SHAPE_NAMES[index % len(SHAPE_NAMES)]


def plain_caption(colour: str, shape: str) -> str:
    """The evaluation prompt form, e.g. ``"a red circle"``."""
    return f"a {colour} {shape}"


@dataclass(frozen=True)
class ShapeSpec:
    """One shape: its names and its exact geometry in final-image pixels."""

    colour: str
    shape: str
    position: str
    size: str
    cx: float
    cy: float
    radius: float
    rgb: tuple[int, int, int]


@dataclass(frozen=True)
class Scene:
    """Everything :func:`render_scene` needs; captions and labels derive from it."""

    shapes: tuple[ShapeSpec, ...]
    background: tuple[int, int, int] = (16, 16, 20)
    size: int = IMAGE_SIZE

    @property
    def label(self) -> int:
        """The class of a one-shape scene, :data:`NO_LABEL` otherwise."""
        if len(self.shapes) != 1:
            return NO_LABEL
        return class_index(self.shapes[0].colour, self.shapes[0].shape)


@dataclass
class Batch:
    images: np.ndarray  # uint8 [N, H, W, 3]
    captions: list[str]
    labels: np.ndarray  # int64 [N], NO_LABEL for two-shape scenes
    scenes: list[Scene] = field(default_factory=list)


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    if shape == "square":
        # Slightly smaller than the radius so squares and circles have similar area.
        h = r * 0.85
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r * 0.95, cy + r * 0.75), (cx - r * 0.95, cy + r * 0.75)]
    if shape == "cross":
        w, h = r * 0.32, r
        return [
            (cx - w, cy - h), (cx + w, cy - h), (cx + w, cy - w), (cx + h, cy - w),
            (cx + h, cy + w), (cx + w, cy + w), (cx + w, cy + h), (cx - w, cy + h),
            (cx - w, cy + w), (cx - h, cy + w), (cx - h, cy - w), (cx - w, cy - w),
        ]  # fmt: skip
    return None


def render_scene(scene: Scene) -> np.ndarray:
    """Draw ``scene`` as a uint8 ``[H, W, 3]`` array."""
    k = _SUPERSAMPLE
    big = Image.new("RGB", (scene.size * k, scene.size * k), scene.background)
    draw = ImageDraw.Draw(big)
    for s in scene.shapes:
        # Pixel centres sit at half-integers, hence the 0.5 shift into drawing coordinates.
        cx, cy, r = (s.cx + 0.5) * k, (s.cy + 0.5) * k, s.radius * k
        poly = _polygon(s.shape, cx, cy, r)
        if poly is None:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=s.rgb)
        else:
            draw.polygon(poly, fill=s.rgb)
    return np.asarray(big.resize((scene.size, scene.size), Image.Resampling.BOX), dtype=np.uint8)


def _jitter_rgb(rng: np.random.Generator, colour: str) -> tuple[int, int, int]:
    base = np.array(COLOURS[colour], dtype=np.int64) + rng.integers(-15, 16, size=3)
    return tuple(int(v) for v in np.clip(base, 0, 255))


def _inside(v: float, r: float) -> float:
    """Clamp a centre coordinate so a shape of radius ``r`` lies wholly inside the frame."""
    return float(np.clip(v, r + 0.5, IMAGE_SIZE - 1.5 - r))


def _single_shape(rng: np.random.Generator, colour: str, shape: str, position: str, size: str) -> ShapeSpec:
    lo, hi = SIZES[size]
    r = float(rng.uniform(lo, hi))
    ax, ay = POSITIONS[position]
    cx, cy = ax + rng.uniform(-2, 2), ay + rng.uniform(-2, 2)
    # Large shapes thus sit nearer the centre.
    cx, cy = _inside(cx, r), _inside(cy, r)
    return ShapeSpec(colour, shape, position, size, cx, cy, r, _jitter_rgb(rng, colour))


def random_scene(
    rng: np.random.Generator,
    *,
    num_shapes: int | None = None,
    p_two: float = 0.3,
    colour: str | None = None,
    shape: str | None = None,
) -> Scene:
    """A random scene; ``colour``/``shape`` fix the (first) shape, ``num_shapes`` 1 or 2."""
    if num_shapes is None:
        num_shapes = 2 if rng.random() < p_two else 1
    if num_shapes not in (1, 2):
        raise ValueError(f"num_shapes must be 1 or 2, got {num_shapes}")
    background = tuple(int(v) for v in rng.integers(4, 36, size=3))
    c1 = colour or COLOUR_NAMES[rng.integers(len(COLOUR_NAMES))]
    s1 = shape or SHAPE_NAMES[rng.integers(len(SHAPE_NAMES))]
    if num_shapes == 1:
        pos = POSITION_NAMES[rng.integers(len(POSITION_NAMES))]
        size = SIZE_NAMES[rng.integers(len(SIZE_NAMES))]
        return Scene((_single_shape(rng, c1, s1, pos, size),), background)
    layout = PAIR_LAYOUTS[rng.integers(len(PAIR_LAYOUTS))]
    if rng.random() < 0.5:
        layout = layout[::-1]
    # A different colour for the second shape keeps "the red one" unambiguous in captions.
    c2 = COLOUR_NAMES[rng.choice([i for i, c in enumerate(COLOUR_NAMES) if c != c1])]
    s2 = SHAPE_NAMES[rng.integers(len(SHAPE_NAMES))]
    specs = []
    for (c, s), pos in zip(((c1, s1), (c2, s2)), layout, strict=True):
        r = float(rng.uniform(*_PAIR_RADIUS))
        ax, ay = _PAIR_ANCHORS[pos]
        cx, cy = (_inside(v + rng.uniform(-1, 1), r) for v in (ax, ay))
        specs.append(ShapeSpec(c, s, pos, "small", cx, cy, r, _jitter_rgb(rng, c)))
    return Scene(tuple(specs), background)


def caption_variants(scene: Scene) -> list[str]:
    """Every caption that truthfully describes ``scene``; the first is the plainest."""
    if len(scene.shapes) == 1:
        s = scene.shapes[0]
        where = POSITION_PHRASES[s.position]
        return [
            plain_caption(s.colour, s.shape),
            f"a {s.size} {s.colour} {s.shape}",
            f"a {s.colour} {s.shape} {where}",
            f"a {s.size} {s.colour} {s.shape} {where}",
        ]
    a, b = scene.shapes
    pa, pb = POSITION_PHRASES[a.position], POSITION_PHRASES[b.position]
    return [
        f"a {a.colour} {a.shape} and a {b.colour} {b.shape}",
        f"a {a.colour} {a.shape} {pa} and a {b.colour} {b.shape}",
        f"a {a.colour} {a.shape} {pa} and a {b.colour} {b.shape} {pb}",
    ]


def caption_scene(scene: Scene, rng: np.random.Generator | None = None, p_plain: float = 0.5) -> str:
    """The plain caption with probability ``p_plain`` (always, without ``rng``), else a richer one."""
    variants = caption_variants(scene)
    if rng is None or rng.random() < p_plain:
        return variants[0]
    return variants[1 + int(rng.integers(len(variants) - 1))]


def make_batch(
    n: int,
    seed: int,
    *,
    p_two: float = 0.3,
    p_plain: float = 0.5,
    colour: str | None = None,
    shape: str | None = None,
) -> Batch:
    """``n`` random scenes rendered, captioned and labelled; a pure function of its arguments."""
    rng = np.random.default_rng(seed)
    scenes = [random_scene(rng, p_two=p_two, colour=colour, shape=shape) for _ in range(n)]
    captions = [caption_scene(sc, rng, p_plain) for sc in scenes]
    images = (
        np.stack([render_scene(sc) for sc in scenes]) if scenes else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    )
    labels = np.array([sc.label for sc in scenes], dtype=np.int64)
    return Batch(images, captions, labels, scenes)


def to_tensor_range(images: np.ndarray) -> np.ndarray:
    """uint8 ``[N, H, W, 3]`` → float32 ``[N, 3, H, W]`` in [-1, 1], the diffusion models' pixel space."""
    return images.astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0


def from_tensor_range(x: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_tensor_range`, clipping to [-1, 1] first."""
    return np.round((np.clip(x, -1, 1).transpose(0, 2, 3, 1) + 1) * 127.5).astype(np.uint8)
