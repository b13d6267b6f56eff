"""Which pixels of a generated shapes-world sample are each named object: the "own mask" of attention binding.

A generated image has no ground-truth mask, so one is read off the image itself. The world's six colours are
saturated and far apart (the closest pair, blue and cyan, is 142 RGB units apart; the dark background is at least
160 from every one), so a pixel belongs to the object named "red" when its nearest world colour is red and lies
within ``MAX_COLOUR_DISTANCE`` of it — half the closest pair's distance, so no pixel can be claimed by two colours.
Anti-aliased edges (colour mixed with background) fall outside and count as background. This is the *colour* mask.

When the sample shows fewer than ``MIN_OBJECT_PIXELS`` pixels of an object's colour (the model drew another colour,
or nothing), the *layout* mask stands in, if the prompt fixes where the object goes: a disc of the world's mean
pair radius at the named anchor ("on the left"), or at the partner of the other object's named anchor (in a
two-object scene "left" implies "right" for the other one). Without a named position the object has no mask and its
words leave the binding accuracy. Where a colour mask exists and the prompt names its position, the colour mask's
centroid is checked against the layout (its nearest anchor): a cross-check of the two definitions that also says how
often the model put the object where it was asked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from condition.shapes_world import COLOURS, PAIR_LAYOUTS, POSITIONS

# The world's pair layouts name positions in pairs: the partner of "left" is "right", and so on.
PARTNER: dict[str, str] = {a: b for pair in PAIR_LAYOUTS for a, b in (pair, pair[::-1])}
PAIR_POSITIONS: tuple[str, ...] = tuple(PARTNER)
_PALETTE_NAMES = tuple(COLOURS)
_PALETTE = np.array([COLOURS[name] for name in _PALETTE_NAMES], dtype=np.float64)
MAX_COLOUR_DISTANCE = 0.5 * min(float(np.linalg.norm(_PALETTE[i] - _PALETTE[j]))
                                for i in range(len(_PALETTE)) for j in range(i + 1, len(_PALETTE)))
MIN_OBJECT_PIXELS = 10  # the world's smallest pair object covers ~27 pixels; fewer is a speck, not an object
# Pair objects have radius 4–6.5 px (condition/shapes_world.py); the fallback disc takes the mean. Its centre is the
# world's named position (the pair anchors sit 1 px further out on the same axis, within the world's ±1 px jitter).
LAYOUT_RADIUS = 5.25
WORLD_SIDE = 32  # the positions above are in pixels of the world's 32×32 images


@dataclass(frozen=True)
class ObjectMasks:
    """Per sample and named object: the mask ``[B, K, H, W]`` (disjoint across objects), where it came from
    ("colour", "layout" or "none") and, for colour masks with a known position, whether its centroid lies at it."""

    masks: np.ndarray
    sources: list[list[str]]
    layout_agrees: list[list[bool | None]]


def colour_labels(image: np.ndarray) -> np.ndarray:
    """Per pixel of a uint8 ``[H, W, 3]`` image, the index of its world colour in ``COLOURS`` or -1 (background)."""
    distance = np.linalg.norm(image[:, :, None, :].astype(np.float64) - _PALETTE[None, None], axis=-1)
    nearest = distance.argmin(axis=-1)
    return np.where(distance.min(axis=-1) <= MAX_COLOUR_DISTANCE, nearest, -1)


def colour_mask(image: np.ndarray, colour: str) -> np.ndarray:
    """The pixels of ``image`` whose world colour is ``colour`` (boolean ``[H, W]``)."""
    return colour_labels(image) == _PALETTE_NAMES.index(colour)


def layout_mask(position: str, height: int, width: int) -> np.ndarray:
    """A disc of ``LAYOUT_RADIUS`` at the world's anchor for ``position``, scaled to an ``height × width`` image."""
    ax, ay = POSITIONS[position]
    scale_x, scale_y = width / WORLD_SIDE, height / WORLD_SIDE
    ys, xs = np.mgrid[0:height, 0:width]
    return (((xs + 0.5) / scale_x - (ax + 0.5)) ** 2 + ((ys + 0.5) / scale_y - (ay + 0.5)) ** 2) <= LAYOUT_RADIUS**2


def nearest_position(mask: np.ndarray) -> str:
    """The pair position (left, right, top, bottom) whose anchor is nearest the mask's centroid."""
    ys, xs = np.nonzero(mask)
    cx, cy = xs.mean() * WORLD_SIDE / mask.shape[1], ys.mean() * WORLD_SIDE / mask.shape[0]
    return min(PAIR_POSITIONS, key=lambda name: (POSITIONS[name][0] - cx) ** 2 + (POSITIONS[name][1] - cy) ** 2)


def expected_positions(positions: list[str | None]) -> list[str | None]:
    """Each object's position: named in the prompt, or implied by the other object's (left ↔ right, top ↔ bottom)."""
    if len(positions) != 2:
        return list(positions)
    first, second = positions
    return [first or PARTNER.get(second or ""), second or PARTNER.get(first or "")]


def object_masks(images: np.ndarray, colours: list[str], positions: list[str | None]) -> ObjectMasks:
    """Masks of the named objects in each uint8 ``[B, H, W, 3]`` sample: by colour, else by layout (see the module
    docstring); ``colours[k]`` and ``positions[k]`` describe object k (positions may be None)."""
    batch, height, width = images.shape[:3]
    where = expected_positions(positions)
    masks = np.zeros((batch, len(colours), height, width), dtype=bool)
    sources: list[list[str]] = []
    agrees: list[list[bool | None]] = []
    for b in range(batch):
        labels = colour_labels(images[b])
        row_sources, row_agrees = [], []
        for k, colour in enumerate(colours):
            found = labels == _PALETTE_NAMES.index(colour)
            if found.sum() >= MIN_OBJECT_PIXELS:
                masks[b, k] = found
                row_sources.append("colour")
                row_agrees.append(nearest_position(found) == where[k] if where[k] in PARTNER else None)
            elif where[k] is not None:
                masks[b, k] = layout_mask(where[k], height, width)
                row_sources.append("layout")
                row_agrees.append(None)
            else:
                row_sources.append("none")
                row_agrees.append(None)
        # A layout disc may cover pixels of the other object's colour mask: those stay the other's.
        for k, source in enumerate(row_sources):
            if source == "layout":
                others = [j for j in range(len(colours)) if j != k and row_sources[j] == "colour"]
                for j in others:
                    masks[b, k] &= ~masks[b, j]
        sources.append(row_sources)
        agrees.append(row_agrees)
    return ObjectMasks(masks, sources, agrees)


def cell_coverage(masks: np.ndarray, height: int, width: int) -> np.ndarray:
    """The fraction of each cell of an ``height × width`` attention grid covered by each mask: ``[B, K, h, w]``.

    Area weights (not a nearest-pixel resample) keep the attention mass exact: a cell half covered by an object gives
    it half its mass. Mask sides must be multiples of the grid's (the UNet halves them, so they are)."""
    batch, objects, mask_h, mask_w = masks.shape
    if mask_h % height or mask_w % width:
        raise ValueError(f"a {mask_h}×{mask_w} mask does not tile a {height}×{width} attention grid")
    blocks = masks.reshape(batch, objects, height, mask_h // height, width, mask_w // width)
    return blocks.mean(axis=(3, 5))
