"""CFG rescale: a correction applied after any method."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from guidance.methods.base import RuleParam
from guidance.modifiers.base import Modifier, Options


def rescale(guided: Tensor, eps_cond: Tensor, phi: float) -> Tensor:
    """CFG rescale (Lin et al. 2023, "Common diffusion noise schedules ... are flawed").

    ε_r = ε̃ · std(c) / std(ε̃) (per sample), then ε = φ ε_r + (1 − φ) ε̃.
    Undoes the variance growth of large guidance scales; φ = 0 is a no-op.
    """
    if phi == 0:
        return guided
    dims = list(range(1, eps_cond.ndim))
    std_cond = eps_cond.std(dim=dims, keepdim=True)
    std_guided = guided.std(dim=dims, keepdim=True)
    # A constant prediction (CFG-Zero*'s zeroed first steps) has no spread to match: it stays as it is (diffusers'
    # formula divides by its std of 0 and returns NaN there).
    ratio = torch.where(std_guided > 0, std_cond / std_guided.clamp_min(torch.finfo(guided.dtype).tiny), 1.0)
    rescaled = guided * ratio
    return phi * rescaled + (1 - phi) * guided


FORMULA = "ε ← φ · ε · std(c)/std(ε) + (1 − φ) · ε"
RESCALE = RuleParam("rescale", 0.0, "rescale φ (after any rule)", low=0.0, high=1.0,
                   info="CFG rescale φ: blends the guided prediction with a copy rescaled to c's standard deviation, "
                        "against over-exposure at high scales; φ = 0.7 from Lin et al. 2023, 0 = off.")


def rescale_guided(guided: Tensor, predictions: Mapping[str, Tensor], options: Options) -> Tensor:
    return rescale(guided, predictions["cond"], options["rescale"])


MODIFIER = Modifier(
    name="rescale", params=(RESCALE,), example={"rescale": 0.7}, on=lambda o: bool(o["rescale"]), formula=FORMULA,
    paper="Lin et al. 2023, Common Diffusion Noise Schedules and Sample Steps are Flawed (φ = 0.7)",
    label="CFG rescale", adjust=rescale_guided, order=20,
)
