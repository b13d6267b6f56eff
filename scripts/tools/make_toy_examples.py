"""Write the toy profile's example inputs: three shapes-world scenes as 32×32 PNGs.

    .venv/bin/python -m scripts.tools.make_toy_examples        # → assets/toy/examples/*.png

The ControlNet and CLIP-image tabs use them as inputs in the toy profile (a photo means little to
models that only ever saw coloured shapes). Each file is a pure function of the world's seed.
"""

from __future__ import annotations

from PIL import Image

from condition.shapes_world import make_batch
from scripts.shared.training import ASSETS

EXAMPLES = ASSETS / "examples"
# file name → (seed, number of shapes): scenes picked for clear, different layouts.
SCENES = {"two_shapes": (1, 2), "large_circle": (12, 1), "triangle": (5, 1)}


def scene(seed: int, shapes: int):
    """The first scene with ``shapes`` shapes from the world generator at ``seed``."""
    batch = make_batch(16, seed, p_two=0.0 if shapes == 1 else 1.0, p_plain=1.0)
    return batch.images[0], batch.captions[0]


def main() -> None:
    EXAMPLES.mkdir(parents=True, exist_ok=True)
    for name, (seed, shapes) in SCENES.items():
        image, caption = scene(seed, shapes)
        Image.fromarray(image).save(EXAMPLES / f"{name}.png")
        print(f"{name}.png: {caption}")


if __name__ == "__main__":
    main()
