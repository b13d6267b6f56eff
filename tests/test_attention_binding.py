"""``/attention_binding``: prompt parsing, masks read off samples, region masses, binding decisions, the recorder
against the existing attention store, the endpoint on the toy and a tiny SD, and bad input.

Each comparison is also shown failing once on a deliberately wrong input, so a pass means something.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from condition.shapes_world import random_scene, render_scene
from experiments.attention_binding import (
    BindingRun,
    NamedObject,
    TrackedWord,
    attention_binding,
    prompt_words,
    region_mass,
)
from experiments.binding_masks import ObjectMasks, colour_mask, object_masks
from experiments.binding_report import summarise, word_samples
from guidance.rules import GuidanceRule
from models.loading.sd import load_role_sd
from models.profiles import load_profile
from models.runtime import pick_runtime, rows_at_most
from pipelines.attention import token_map
from pipelines.text_to_image import text_to_image
from tasks.attention_binding import ATTENTION_BINDING

TOY = load_profile("toy")
PROMPT = "a red circle on the left and a blue square"
CORE, MOSTLY = 0.99, 0.5  # pixel coverage by the object: wholly inside it, more than half


@pytest.fixture(scope="module")
def toy_sd():
    return load_role_sd(TOY, pick_runtime(), "sd")


def test_prompt_words_name_objects_positions_and_words():
    objects, words = prompt_words(PROMPT, world=True)
    assert objects == [NamedObject("red", "circle", "left"), NamedObject("blue", "square", None)]
    assert [(w.word, w.kind, w.obj) for w in words] == [("red", "colour", 0), ("circle", "shape", 0),
                                                        ("blue", "colour", 1), ("square", "shape", 1)]
    objects, _ = prompt_words("at the top a green cross and a yellow circle at the bottom", world=True)
    assert [o.position for o in objects] == ["top", "bottom"]
    # A real model's open vocabulary: "cube" is a shape word there, a noun like "cat" is not tracked.
    _, words = prompt_words("a red cat and a blue cube", world=False)
    assert [w.word for w in words] == ["red", "blue", "cube"]


def coverage(scene, k: int) -> np.ndarray:
    """How much of each pixel object k covers, from an exact render of it alone: 1 inside, 0 outside, the
    anti-aliased edge in between."""
    alone = type(scene)((scene.shapes[k],), scene.background)
    offset = render_scene(alone).astype(float) - np.array(scene.background, float)
    full = np.array(scene.shapes[k].rgb, float) - np.array(scene.background, float)
    return np.clip(offset @ full / (full @ full), 0, 1)


def test_colour_masks_recover_the_worlds_own_masks():
    """On 40 world pair scenes (where the truth is known) the colour mask holds every pixel the object fully covers
    and no pixel it covers less than half of; the other object's mask fails both."""
    rng = np.random.default_rng(0)
    for _ in range(40):
        scene = random_scene(rng, num_shapes=2)
        found = object_masks(render_scene(scene)[None], [s.colour for s in scene.shapes],
                             [s.position for s in scene.shapes])
        assert found.sources == [["colour", "colour"]] and found.layout_agrees == [[True, True]]
        for k in range(2):
            cover, mask, other = coverage(scene, k), found.masks[0, k], found.masks[0, 1 - k]
            assert mask[cover >= CORE].all() and (cover[mask] >= MOSTLY).all()
            assert not other[cover >= CORE].any()


def test_layout_stands_in_when_a_colour_is_missing():
    """Only a red object drawn: blue gets the disc at the position implied by "left" (right), never its pixels."""
    scene = random_scene(np.random.default_rng(3), num_shapes=2, colour="red")
    red_only = render_scene(type(scene)(scene.shapes[:1], scene.background))
    found = object_masks(red_only[None], ["red", "blue"], ["left", None])
    assert found.sources == [["colour", "layout"]]
    blue = found.masks[0, 1]
    ys, xs = np.nonzero(blue)
    assert xs.mean() > 20 and abs(ys.mean() - 16) < 1.5 and not (blue & found.masks[0, 0]).any()
    nothing = object_masks(red_only[None], ["red", "blue"], [None, None])
    assert nothing.sources == [["colour", "none"]] and not nothing.masks[0, 1].any()


def test_region_mass_equals_a_pixel_count():
    """Area-weighted cell masses against an independent count: each 8×8 cell's probability spread over its 4×4 pixels,
    summed over the mask's pixels."""
    gen = torch.Generator().manual_seed(0)
    grid = torch.rand(3, 2, 2, 8, 8, generator=gen)  # [steps, B, words, h, w]
    masks = np.zeros((2, 2, 32, 32), dtype=bool)
    masks[:, 0, 5:17, 3:14], masks[:, 1, 9:30, 19:27] = True, True
    words = [TrackedWord("red", "colour", 0), TrackedWord("blue", "colour", 1)]
    mass = region_mass({"layer": grid}, masks, words)[:, 0]  # [S, B, W, 3]
    pixels = grid.repeat_interleave(4, dim=-1).repeat_interleave(4, dim=-2).numpy() / 16  # each pixel a 16th
    for i, word in enumerate(words):
        own = (pixels[:, :, i] * masks[None, :, word.obj]).sum(axis=(-1, -2)) / 64
        other = (pixels[:, :, i] * masks[None, :, 1 - word.obj]).sum(axis=(-1, -2)) / 64
        np.testing.assert_allclose(mass[:, :, i, 0], own, rtol=1e-5)
        np.testing.assert_allclose(mass[:, :, i, 1], other, rtol=1e-5)
    np.testing.assert_allclose(mass.sum(axis=-1), grid.mean(dim=(-1, -2)).numpy(), rtol=1e-5)
    shifted = np.roll(masks, 1, axis=-1)  # a mask one pixel off gives other masses
    assert not np.allclose(region_mass({"layer": grid}, shifted, words)[:, 0, ..., 0], mass[..., 0], rtol=1e-3)


def synthetic_run(on_own: bool) -> BindingRun:
    """Two objects (left and right halves' discs); every word's attention sits on its own object (or the other)."""
    masks = np.zeros((1, 2, 32, 32), dtype=bool)
    masks[0, 0, 12:20, 4:12], masks[0, 1, 12:20, 20:28] = True, True
    words = [TrackedWord("red", "colour", 0), TrackedWord("square", "shape", 1)]
    grid = torch.full((2, 1, 2, 8, 8), 0.01)
    for i, word in enumerate(words):
        target = word.obj if on_own else 1 - word.obj
        grid[:, 0, i, 3:5, (1 if target == 0 else 5):(3 if target == 0 else 7)] = 0.5
    objects = [NamedObject("red", None, "left"), NamedObject("blue", "square", None)]
    found = ObjectMasks(masks, [["colour", "colour"]], [[True, True]])
    return BindingRun("test", objects, words, ["layer"], np.zeros((1, 32, 32, 3), np.uint8), torch.zeros(1, 2, 32, 32),
                      region_mass({"layer": grid}, masks, words), found)


def test_binding_is_own_above_other():
    summary = summarise(word_samples(synthetic_run(on_own=True)))
    assert (summary["all"]["bound"], summary["all"]["n"]) == (2, 2) and summary["all"]["accuracy_by_step"] == [1, 1]
    assert summary["all"]["area_baseline"] == 0  # equal areas: a uniform map is not "bound"
    # The same maps on the other object are counted unbound (the decision can fail).
    assert summarise(word_samples(synthetic_run(on_own=False)))["all"]["bound"] == 0


def test_recorder_agrees_with_the_attention_store_and_leaves_the_samples_alone(toy_sd):
    """The tab's per-layer, per-step recorder averaged down equals ``pipelines.attention``'s store on the same run
    (same images), also when the rows come in chunks of one."""
    run = attention_binding(toy_sd, PROMPT, scale=4.0, steps=3, seed=5, num_images=2, world=True)
    reference = text_to_image(toy_sd, PROMPT, rule=GuidanceRule("cfg", 4.0), steps=3, seed=5, num_images=2,
                              attention=True)
    assert np.array_equal(run.images, (reference.images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8))
    for i, word in enumerate(run.words):
        expected = token_map(reference.attention, list(word.positions))
        torch.testing.assert_close(run.maps[:, i], expected, rtol=1e-4, atol=1e-6)
    wrong = token_map(reference.attention, [run.words[0].positions[0] + 1])  # the next token's map differs
    assert not torch.allclose(run.maps[:, 0], wrong, atol=1e-3)
    with rows_at_most(1):
        chunked = attention_binding(toy_sd, PROMPT, scale=4.0, steps=3, seed=5, num_images=2, world=True)
    torch.testing.assert_close(chunked.maps, run.maps, rtol=1e-4, atol=1e-6)


def test_endpoint_on_the_toy_world():
    result = ATTENTION_BINDING(TOY, steps=8, num_images=2, seed=1)
    meta, table = result.outputs["metadata"], result.outputs["table"]
    assert len(result.outputs["maps"]) == 2 and result.outputs["plot"].size[0] > 300
    assert [w["word"] for w in meta["words"]] == ["red", "circle", "blue", "square"]
    assert len(meta["per_sample"]) == 8 and meta["layers"] == ["down2.0", "mid", "up0.0", "up0.1"]
    decided = [s for s in meta["per_sample"] if s["bound"] is not None]
    assert meta["binding"]["all"]["n"] == len(decided) and meta["binding"]["all"]["bound"] == sum(
        s["bound"] for s in decided)
    for s in meta["per_sample"]:
        assert sum(s["shares"].values()) == pytest.approx(1.0, abs=1e-5)
    assert "### Binding accuracy" in table and "| red | colour |" in table


def test_endpoint_on_a_model_without_masks(tiny_sd_folder, tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(f'sd = "{tiny_sd_folder}"\n[limits]\nmax_pixels = 4096\nmax_steps = 10\n')
    # "$…$" would be mathtext in a matplotlib title, and "\\frac{" without its braces a parse error: titles escape it.
    result = ATTENTION_BINDING(load_profile(str(path)), prompt="a red cube and a $\\frac{$ blue sphere", steps=2)
    meta = result.outputs["metadata"]
    assert meta["binding"] is None and "No masks outside the toy world" in result.outputs["table"]
    assert all(s["bound"] is None and 0 < s["mass"] < 1 for s in meta["per_sample"])


@pytest.mark.parametrize("request_, message", [
    ({"prompt": ""}, "names no colour or shape word"),
    ({"prompt": "a cat on a mat"}, "names no colour or shape word"),
    ({"prompt": "a red circle and a red square"}, "both objects are red"),
    ({"prompt": "a circle and a blue square"}, "needs one of the world's colours"),
    ({"prompt": "a red circle, a blue square and a green cross"}, "the shapes world draws one or two"),
    ({"prompt": "red " * 9}, "at most 8 are measured"),
    ({"scale": 31}, "scale must be between 0 and 30"),
    ({"steps": 0}, "steps must be between 1 and 100"),
    ({"num_images": 9}, "num_images must be between 1 and 8"),
])
def test_bad_requests_get_clear_messages(request_, message):
    with pytest.raises(ValueError) as err:
        ATTENTION_BINDING.spec.bind(TOY).parse(request_)
    assert message in str(err.value)


def test_colour_mask_needs_the_named_colour():
    image = render_scene(random_scene(np.random.default_rng(1), num_shapes=1, colour="green"))
    assert colour_mask(image, "green").sum() > 10 and not colour_mask(image, "blue").any()
