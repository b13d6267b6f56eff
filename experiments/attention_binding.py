"""Attention binding: does "red" attend to the red object? Cross-attention mass per word, own object vs the rest.

For each colour and shape word of the prompt, every cross-attention layer at every denoising step gives a map
A(p) over the layer's grid: the share of pixel p's attention (softmax over the text tokens, mean over heads, the
conditional branch) that goes to the word's token(s). Its *mass* in a region R is Σ_p A(p)·cover_R(p), cover_R being
the fraction of the cell that R covers (``binding_masks.cell_coverage``), divided by the number of cells so layers
of every resolution weigh the same. With the word's own object's mask O and the other object's mask X (read off the
generated sample by colour, ``experiments.binding_masks``), the shares are mass(O), mass(X) and the background's rest,
over the word's total mass. The word is **bound** when mass(O) > mass(X) — summed over all steps and layers for the
binding accuracy, per step and per layer for the curves. A uniform map would be "bound" exactly when O is larger than
X: that area baseline is reported beside it.

Without masks (a real text-to-image model: nothing says which pixels are "the red cube"), each word's share of the
attention is reported per step and layer, and its maps are shown.

The maps are recorded by :class:`pipelines.attention.RecordingProcessor` on each cross-attention layer; the sample is
drawn by the one sampler loop (``pipelines.text_to_image.generate``), the recorder closing a step in its callback.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from condition.shapes_world import COLOUR_NAMES, POSITION_NAMES, SHAPE_NAMES
from condition.text import prompt_tokens, token_offset
from experiments.binding_masks import ObjectMasks, cell_coverage, object_masks
from guidance.rules import GuidanceRule
from guidance.sampler import StepState
from guidance.settings import SamplingSettings
from models.adapters.denoisers import UNetDenoiser
from models.loading.sd import SDComponents
from pipelines.attention import RecordingProcessor, cross_attention_layers, token_positions
from pipelines.text_to_image import generate, latent_shape, prompt_contexts, resolve_size

# Words tracked on a real model: the world's plus common colour and shape words (a noun like "cat" is not tracked).
OPEN_COLOURS = (*COLOUR_NAMES, "orange", "purple", "pink", "black", "white", "brown", "grey", "gray", "gold", "silver")
OPEN_SHAPES = (*SHAPE_NAMES, "cube", "sphere", "ball", "box", "star", "heart", "cylinder", "cone", "ring", "pyramid")
POSITION_WORDS = {**{name: name for name in POSITION_NAMES}, "center": "centre"}
MAX_WORDS = 8
REGIONS = ("own", "other", "background")


@dataclass(frozen=True)
class NamedObject:
    colour: str | None
    shape: str | None
    position: str | None

    def describe(self) -> str:
        name = " ".join(w for w in (self.colour, self.shape) if w)
        return f"{name} ({self.position})" if self.position else name


@dataclass(frozen=True)
class TrackedWord:
    """A colour or shape word of the prompt, the object it names and its token positions in the encoder."""

    word: str
    kind: str  # "colour" or "shape"
    obj: int
    positions: tuple[int, ...] = ()


def prompt_words(prompt: str, world: bool) -> tuple[list[NamedObject], list[TrackedWord]]:
    """The objects a prompt names and its colour and shape words, in order; raises ``ValueError`` when it names none.

    A colour or shape word starts a new object when the current one already has that slot (or a shape: "a red
    circle and a blue square" is two objects); a position word belongs to the object it follows (or the next one).
    ``world``: the shapes world's vocabulary and rules (one or two objects, each with its own world colour, which is
    how its mask is found); otherwise the open lists above.
    """
    colours, shapes = (COLOUR_NAMES, SHAPE_NAMES) if world else (OPEN_COLOURS, OPEN_SHAPES)
    objects: list[dict] = []
    words: list[TrackedWord] = []
    pending_position = None
    for word in re.findall(r"[a-z]+", prompt.lower()):
        kind = "colour" if word in colours else "shape" if word in shapes else None
        if kind is not None:
            current = objects[-1] if objects else None
            if current is None or current[kind] is not None or current["shape"] is not None:
                current = {"colour": None, "shape": None, "position": pending_position}
                objects.append(current)
                pending_position = None
            current[kind] = word
            words.append(TrackedWord(word, kind, len(objects) - 1))
        elif word in POSITION_WORDS:
            if objects and objects[-1]["position"] is None:
                objects[-1]["position"] = POSITION_WORDS[word]
            else:
                pending_position = POSITION_WORDS[word]
    if not words:
        raise ValueError(f"the prompt names no colour or shape word; it needs at least one of: {', '.join(colours)} "
                         f"(colours) or {', '.join(shapes)} (shapes), e.g. 'a red circle on the left and a blue "
                         "square'")
    named = [NamedObject(o["colour"], o["shape"], o["position"]) for o in objects]
    if len(words) > MAX_WORDS:
        raise ValueError(f"the prompt has {len(words)} colour and shape words; at most {MAX_WORDS} are measured")
    if world:
        check_world_objects(named)
    return named, words


def check_world_objects(objects: list[NamedObject]) -> None:
    """The shapes world draws one or two objects, each in its own colour: the colour is how its mask is found."""
    if len(objects) > 2:
        raise ValueError(f"the prompt names {len(objects)} objects ({'; '.join(o.describe() for o in objects)}); "
                         "the shapes world draws one or two")
    if any(o.colour is None for o in objects):
        missing = next(o.describe() for o in objects if o.colour is None)
        raise ValueError(f"every object needs one of the world's colours ({', '.join(COLOUR_NAMES)}): its mask is "
                         f"the sample's pixels of that colour; '{missing}' has none")
    if len(objects) == 2 and objects[0].colour == objects[1].colour:
        raise ValueError(f"both objects are {objects[0].colour}: give them different colours, so the sample's "
                         "pixels say which object is which (the world never draws two of one colour)")


def locate_words(tokens: list[str], words: list[TrackedWord], offset: int = 1) -> list[TrackedWord]:
    """Each word's token positions, searching after the previous word's (a repeated word gets its own occurrence);
    ``offset``: where the prompt's first token sits in the encoder's sequence (after CLIP's start token: 1)."""
    located, cursor = [], 0
    for word in words:
        found = [p + cursor for p in token_positions(tokens[cursor:], word.word, offset)]
        located.append(TrackedWord(word.word, word.kind, word.obj, tuple(found)))
        cursor = found[-1] + 1 - offset  # the index in ``tokens`` just after the word
    return located


class BindingRecorder:
    """Per denoising step and cross-attention layer, the conditional rows' head-mean attention to each tracked word
    at the layer's own grid: ``maps[layer]`` is ``[steps, B, words, h, w]``.

    Calls may come in row chunks (``models.runtime.row_budget``); a step's chunks are joined when the sampler's
    callback closes it, and the last ``batch`` rows kept (the loop stacks the conditional branch last).
    """

    def __init__(self, batch: int, words: list[TrackedWord], height: int, width: int) -> None:
        self.batch, self.words, self.height, self.width = batch, words, height, width
        self.pending: dict[str, list[Tensor]] = {}
        self.recorded: dict[str, list[Tensor]] = {}

    def sink(self, layer: str) -> _LayerSink:
        return _LayerSink(self, layer)

    def add(self, layer: str, probs: Tensor, heads: int) -> None:
        rows, pixels, tokens = probs.shape[0] // heads, probs.shape[1], probs.shape[2]
        mean = probs.float().reshape(rows, heads, pixels, tokens).mean(dim=1)
        per_word = torch.stack([mean[..., list(w.positions)].sum(dim=-1) for w in self.words], dim=-1)
        self.pending.setdefault(layer, []).append(per_word.cpu())

    def end_step(self, state: StepState | None = None) -> None:
        for layer, chunks in self.pending.items():
            rows = torch.cat(chunks)[-self.batch :]
            pixels = rows.shape[1]
            # Every UNet level keeps the latent's aspect ratio, so its grid follows from the pixel count.
            h = round(math.sqrt(pixels * self.height / self.width))
            grid = rows.reshape(self.batch, h, pixels // h, len(self.words)).permute(0, 3, 1, 2)
            self.recorded.setdefault(layer, []).append(grid)
        self.pending = {}

    @property
    def maps(self) -> dict[str, Tensor]:
        if not self.recorded:
            raise ValueError("no cross-attention was recorded (does this UNet have cross-attention layers?)")
        return {layer: torch.stack(steps) for layer, steps in self.recorded.items()}


@dataclass
class _LayerSink:
    """What :class:`RecordingProcessor` records into: one layer's door into the recorder."""

    recorder: BindingRecorder
    layer: str

    def record(self, probs: Tensor, heads: int) -> None:
        self.recorder.add(self.layer, probs, heads)


@contextmanager
def recording_layers(unet, recorder: BindingRecorder) -> Iterator[BindingRecorder]:
    """Recording processors on every cross-attention layer, each filing under its own name; originals restored."""
    original = dict(unet.attn_processors)
    layers = set(cross_attention_layers(unet))
    unet.set_attn_processor({name: RecordingProcessor(p, recorder.sink(name)) if name in layers else p
                             for name, p in original.items()})
    try:
        yield recorder
    finally:
        unet.set_attn_processor(original)


def short_layer(name: str) -> str:
    """``up_blocks.0.attentions.1.transformer_blocks.0.attn2.processor`` → ``up0.1`` (``mid`` for the mid block)."""
    parts = name.split(".")
    if parts[0] == "mid_block":
        return "mid" if parts[2] == "0" else f"mid.{parts[2]}"
    return f"{parts[0].split('_')[0]}{parts[1]}.{parts[3]}"


@dataclass
class BindingRun:
    """One prompt's samples and what their cross-attention did. ``mass`` is ``[steps, layers, B, words, 3]``
    (own, other, background; with no masks everything is "background") in mean attention probability per cell."""

    prompt: str
    objects: list[NamedObject]
    words: list[TrackedWord]
    layers: list[str]
    images: np.ndarray  # uint8 [B, H, W, 3]
    maps: Tensor  # [B, words, H, W]: mean over steps and layers, resampled to the image
    mass: np.ndarray
    masks: ObjectMasks | None

    @property
    def has_masks(self) -> bool:
        return self.masks is not None


def region_mass(maps: dict[str, Tensor], masks: np.ndarray | None, words: list[TrackedWord]) -> np.ndarray:
    """``[steps, layers, B, words, 3]``: each word's mass on its own object, the other object and the rest."""
    out = []
    for grid in maps.values():  # [S, B, W, h, w]
        steps, batch, count, h, w = grid.shape
        total = grid.mean(dim=(-1, -2)).numpy()  # [S, B, W]
        own = other = np.zeros_like(total)
        if masks is not None:
            cover = torch.from_numpy(cell_coverage(masks, h, w)).float()  # [B, K, h, w]
            objects = cover.shape[1]
            per_object = torch.einsum("sbwhx,bkhx->sbwk", grid, cover).numpy() / (h * w)  # [S, B, W, K]
            own = np.stack([per_object[:, :, i, word.obj] for i, word in enumerate(words)], axis=-1)
            other = np.stack([per_object[:, :, i, [k for k in range(objects) if k != word.obj]].sum(axis=-1)
                              for i, word in enumerate(words)], axis=-1)
        out.append(np.stack([own, other, total - own - other], axis=-1))
    return np.stack(out, axis=1)


def image_maps(maps: dict[str, Tensor], height: int, width: int) -> Tensor:
    """Each word's map averaged over steps and layers, every layer resampled (bilinear) to ``height × width``."""
    resampled = [F.interpolate(grid.mean(dim=0), size=(height, width), mode="bilinear", align_corners=False)
                 for grid in maps.values()]
    return torch.stack(resampled).mean(dim=0)


@torch.no_grad()
def attention_binding(
    sd: SDComponents, prompt: str, *, scale: float, steps: int, seed: int, num_images: int, world: bool,
    callback: Callable[[StepState], None] | None = None,
) -> BindingRun:
    """Sample ``num_images`` images of ``prompt`` with CFG at ``scale`` and measure each word's attention mass.

    ``world``: the model draws the shapes world, so objects get masks from the samples (``experiments.binding_masks``).
    """
    objects, words = prompt_words(prompt, world)
    words = locate_words(prompt_tokens(sd.tokenizer, prompt), words, token_offset(sd.tokenizer))
    width, height = resolve_size(sd, None, None)
    cond, uncond, _ = prompt_contexts(sd, prompt, "", num_images)
    shape = latent_shape(sd, width, height, num_images)
    recorder = BindingRecorder(num_images, words, shape[2], shape[3])

    def on_step(state: StepState) -> None:
        recorder.end_step(state)
        if callback is not None:
            callback(state)

    with recording_layers(sd.unet, recorder):
        images, _ = generate(sd, UNetDenoiser(sd.unet, cond, uncond), GuidanceRule("cfg", scale), shape,
                             SamplingSettings(steps=steps, seed=seed, callback=on_step, diagnostics=False))
    pixels = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    maps = recorder.maps
    masks = None
    if world:
        masks = object_masks(pixels, [o.colour for o in objects], [o.position for o in objects])
    return BindingRun(prompt, objects, words, [short_layer(name) for name in maps], pixels,
                      image_maps(maps, height, width), region_mass(maps, masks.masks if masks else None, words), masks)
