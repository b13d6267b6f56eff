"""Perturbed-attention guidance: a third, conditional evaluation with chosen self-attention maps set to identity."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from guidance.methods.base import RuleParam
from guidance.modifiers.base import Modifier, Options

PAG_SCALE = RuleParam("pag_scale", 0.0, "PAG scale s (0 = off; the paper uses 3)", low=0.0, high=10.0, step=0.25,
                      needs="attention",
                      info="Perturbed-attention guidance: pushes away from a third prediction with the chosen "
                           "self-attention maps set to identity, s = 3 from Ahn et al. 2024 (0 = off, one more model "
                           "call per step).")
PAG_LAYERS = RuleParam("pag_layers", "mid", "PAG: self-attention layers perturbed",
                       choices=("mid", "up", "down", "mid,up"), needs="attention",
                       info="Which UNet blocks' self-attention PAG replaces by identity: mid (the default, as "
                            "diffusers' PAG pipelines), up, down or mid and up together.")


def pag_push(guided: Tensor, predictions: Mapping[str, Tensor], options: Options) -> Tensor:
    """Ahn et al. 2024, "Self-Rectifying Diffusion Sampling with Perturbed-Attention Guidance":
    ε ← ε + s (c − c_perturbed), away from what the model predicts without its self-attention structure; it
    composes with every method (the paper and diffusers use s = 3)."""
    return guided + options["pag_scale"] * (predictions["cond"] - predictions["perturbed"])


MODIFIER = Modifier(
    name="pag", params=(PAG_SCALE, PAG_LAYERS), example={"pag_scale": 3.0, "pag_layers": "mid"},
    on=lambda o: bool(o["pag_scale"]), formula="ε ← ε + s (c − c_perturbed)",
    paper="Ahn et al. 2024, Self-Rectifying Diffusion Sampling with Perturbed-Attention Guidance", label="PAG",
    extra_branch="perturbed", adjust=pag_push, order=10,
)
