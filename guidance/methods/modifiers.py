"""Parameters that modify any guidance method: when it acts (interval), a third branch (PAG), x̂0 clamping (threshold).

CFG rescale has its own file (``rescale.py``). These apply on top of whichever method is chosen.
"""

from __future__ import annotations

from torch import Tensor

from guidance.methods.base import Modifier, RuleParam

# Kynkäänniemi et al. 2024, "Applying Guidance in a Limited Interval Improves Sample and Distribution Quality in
# Diffusion Models": guidance helps in the middle of the schedule and hurts at both ends. As diffusers' guiders, step
# i of n guides when int(start·n) ≤ i < int(end·n); outside, the conditional prediction alone (no u evaluated).
INTERVAL_START = RuleParam("interval_start", 0.0, "guide from (fraction of the steps)", low=0.0, high=1.0)
INTERVAL_END = RuleParam("interval_end", 1.0, "guide until (fraction of the steps)", low=0.0, high=1.0)

# Ahn et al. 2024, "Self-Rectifying Diffusion Sampling with Perturbed-Attention Guidance": a third evaluation,
# conditioned, with self-attention replaced by the identity (each token keeps its own value) in the chosen layers;
# ε ← ε + s (c − c_perturbed). It composes with every method; 0 = off (the paper and diffusers use s = 3).
PAG_SCALE = RuleParam("pag_scale", 0.0, "PAG scale s (0 = off; the paper uses 3)", low=0.0, high=10.0, step=0.25,
                      needs="attention")
PAG_LAYERS = RuleParam("pag_layers", "mid", "PAG: self-attention layers perturbed",
                       choices=("mid", "up", "down", "mid,up"), needs="attention")

# Saharia et al. 2022 (Imagen), dynamic thresholding: each step's x̂0 is clipped to its p-th percentile of |x̂0|
# (at least 1) and rescaled, as diffusers' DDIM/DDPM schedulers do with thresholding=True; pixel-space models only.
THRESHOLD = RuleParam("threshold", 0.0, "dynamic thresholding percentile p (0 = off; Imagen uses 0.995)", low=0.5,
                      high=0.9999, step=0.005, off=0.0, needs="pixels")


def pag_term(eps_cond: Tensor, eps_perturbed: Tensor, pag_scale: float) -> Tensor:
    """s (c − c_perturbed): PAG's push away from what the model predicts without its self-attention structure."""
    return pag_scale * (eps_cond - eps_perturbed)


def interval_active(index: int, num_steps: int, start: float, end: float) -> bool:
    """Whether step ``index`` of ``num_steps`` lies in the guidance interval (diffusers' guiders' rule)."""
    return int(start * num_steps) <= index < int(end * num_steps)


INTERVAL = Modifier(
    "interval", (INTERVAL_START, INTERVAL_END), {"interval_start": 0.2, "interval_end": 0.8},
    "guidance only for steps i with ⌊start·n⌋ ≤ i < ⌊end·n⌋; elsewhere ε = c (u not evaluated)",
    "Kynkäänniemi et al. 2024, Applying Guidance in a Limited Interval Improves Sample and Distribution Quality",
    label="guidance interval")
PAG = Modifier(
    "pag", (PAG_SCALE, PAG_LAYERS), {"pag_scale": 3.0, "pag_layers": "mid"}, "ε ← ε + s (c − c_perturbed)",
    "Ahn et al. 2024, Self-Rectifying Diffusion Sampling with Perturbed-Attention Guidance", label="PAG")
DYNAMIC_THRESHOLD = Modifier(
    "threshold", (THRESHOLD,), {"threshold": 0.995},
    "s = max(1, p-th percentile of |x̂0|); x̂0 ← clip(x̂0, −s, s) / s",
    "Saharia et al. 2022 (Imagen), dynamic thresholding",
    label="dynamic thresholding")
