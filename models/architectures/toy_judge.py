"""The toy profile's judge: a small CNN that names the colour and shape in a shapes-world image.

It is trained on clean world images (plus mild noise and blur so slightly soft samples are
still read correctly) and is used only to score generated samples, never to guide them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from condition.shapes_world import COLOUR_NAMES, SHAPE_NAMES


class ToyJudge(nn.Module):
    """Conv net with two heads: colour (6-way) and shape (4-way) logits. Input in [-1, 1], ``[B, 3, 32, 32]``."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.width = width

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.SiLU())

        w = width
        self.features = nn.Sequential(
            block(3, w, 1), block(w, 2 * w, 2), block(2 * w, 2 * w, 1), block(2 * w, 4 * w, 2),
            block(4 * w, 4 * w, 1),
        )  # fmt: skip
        # Max pooling: the shape may be anywhere, and a small shape fills few cells.
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.colour = nn.Linear(4 * w, len(COLOUR_NAMES))
        self.shape = nn.Linear(4 * w, len(SHAPE_NAMES))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.pool(self.features(x)).flatten(1)
        return self.colour(h), self.shape(h)

    @torch.no_grad()
    def predict(self, x: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(colour index, shape index) per image of a batch in [-1, 1]."""
        c, s = self(x.float().clamp(-1, 1))
        return c.argmax(1).cpu().numpy(), s.argmax(1).cpu().numpy()


def save_judge(judge: ToyJudge, folder: str | Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in judge.state_dict().items()}, str(folder / "model.safetensors"))
    config = {"width": judge.width, "colours": list(COLOUR_NAMES), "shapes": list(SHAPE_NAMES)}
    (folder / "config.json").write_text(json.dumps(config, indent=2))


def load_judge(folder: str | Path) -> ToyJudge:
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    judge = ToyJudge(width=int(config["width"]))
    judge.load_state_dict(load_file(str(folder / "model.safetensors")))
    return judge.eval()
