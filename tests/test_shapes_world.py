"""The shapes world: deterministic, and its captions and labels agree with the scene parameters."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from condition.control import canny_map
from condition.shapes_world import (
    CLASS_NAMES,
    COLOUR_NAMES,
    IMAGE_SIZE,
    NO_LABEL,
    POSITION_PHRASES,
    SHAPE_NAMES,
    VOCABULARY,
    Scene,
    ShapeSpec,
    caption_variants,
    class_index,
    class_parts,
    make_batch,
    random_scene,
    render_scene,
)


def test_classes() -> None:
    assert len(CLASS_NAMES) == 24 and CLASS_NAMES[0] == "red circle"
    assert {"red", "green", "blue", "yellow", "magenta", "cyan"} <= set(COLOUR_NAMES)
    assert set(SHAPE_NAMES) == {"circle", "square", "triangle", "cross"}
    for i, name in enumerate(CLASS_NAMES):
        c, s = class_parts(i)
        assert name == f"{c} {s}" and class_index(c, s) == i


def test_make_batch_is_deterministic() -> None:
    a, b = make_batch(40, seed=3), make_batch(40, seed=3)
    assert a.images.dtype == np.uint8 and a.images.shape == (40, IMAGE_SIZE, IMAGE_SIZE, 3)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.captions == b.captions and (a.labels == b.labels).all() and a.scenes == b.scenes
    assert not np.array_equal(a.images, make_batch(40, seed=4).images)


def test_captions_and_labels_follow_the_scene() -> None:
    batch = make_batch(300, seed=0, p_two=0.4)
    for scene, caption, label in zip(batch.scenes, batch.captions, batch.labels, strict=True):
        assert caption in caption_variants(scene)
        assert set(caption.split()) <= set(VOCABULARY)
        if len(scene.shapes) == 1:
            s = scene.shapes[0]
            assert label == class_index(s.colour, s.shape) and CLASS_NAMES[label] == f"{s.colour} {s.shape}"
            assert caption.startswith("a ") and caption.endswith(s.shape) or POSITION_PHRASES[s.position] in caption
        else:
            assert label == NO_LABEL and " and " in caption
            first, second = caption.split(" and ")
            assert scene.shapes[0].colour in first and scene.shapes[1].colour in second
    assert (batch.labels == NO_LABEL).any() and (batch.labels >= 0).any()


def test_fixed_class_and_plain_caption() -> None:
    batch = make_batch(10, seed=1, p_two=0.0, p_plain=1.0, colour="blue", shape="cross")
    assert batch.captions == ["a blue cross"] * 10 and (batch.labels == class_index("blue", "cross")).all()


def test_render_draws_the_colour_where_the_shape_is() -> None:
    spec = ShapeSpec("red", "square", "left", "large", cx=9.0, cy=16.0, radius=7.0, rgb=(230, 40, 40))
    img = render_scene(Scene((spec,), background=(10, 10, 10)))
    assert tuple(img[16, 9]) == (230, 40, 40) and tuple(img[2, 30]) == (10, 10, 10)
    assert img[:, :16].astype(int).sum() > img[:, 16:].astype(int).sum()


def test_shapes_stay_inside_the_frame() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        for s in random_scene(rng).shapes:
            assert s.radius < s.cx < IMAGE_SIZE - 1 - s.radius and s.radius < s.cy < IMAGE_SIZE - 1 - s.radius


@pytest.mark.parametrize("as_pil", [False, True])
def test_canny_map(as_pil: bool) -> None:
    img = make_batch(1, seed=5, p_two=0.0).images[0]
    edges = canny_map(Image.fromarray(img) if as_pil else img, 100, 200)
    arr = np.asarray(edges)
    assert isinstance(edges, Image.Image) and edges.mode == "RGB" and arr.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    assert set(np.unique(arr)) <= {0, 255} and 0 < (arr[..., 0] > 0).mean() < 0.5
    assert (arr[..., 0] == arr[..., 1]).all()
    blank = np.asarray(canny_map(np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 20, np.uint8)))
    assert blank.max() == 0
