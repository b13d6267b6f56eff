"""Dynamic thresholding of the predicted x̂0, as Imagen defines it."""

from __future__ import annotations

from typing import Any

from guidance.methods.base import RuleParam
from guidance.modifiers.base import Modifier, Options, RunFacts

THRESHOLD = RuleParam("threshold", 0.0, "dynamic thresholding percentile p (0 = off; Imagen uses 0.995)", low=0.5,
                      high=0.9999, step=0.005, off=0.0, needs="pixels",
                      info="Dynamic thresholding: each step's x̂0 is clipped at its p-th percentile of |x̂0| and "
                           "rescaled, p = 0.995 from Imagen (Saharia et al. 2022); 0 = off, pixel models with ddim or "
                           "ddpm only.")
THRESHOLD_SCHEDULERS = ("ddim", "ddpm")


def thresholding(options: Options) -> dict[str, Any]:
    """Saharia et al. 2022 (Imagen): each step's x̂0 is clipped to s = max(1, p-th percentile of |x̂0|) per sample
    and divided by s, as diffusers' DDIM/DDPM schedulers do with ``thresholding=True``.

    Imagen puts no upper bound on s, so ``sample_max_value`` is ∞: at diffusers' default of 1 the clamp makes s = 1
    always, and dynamic thresholding is plain clipping (the toy evaluation drew identical images with and without).
    """
    return {"thresholding": True, "dynamic_thresholding_ratio": options["threshold"],
            "sample_max_value": float("inf")}


def check_threshold(options: Options, facts: RunFacts) -> None:
    if facts.scheduler not in THRESHOLD_SCHEDULERS:
        raise ValueError(f"dynamic thresholding (threshold > 0) needs the ddim or ddpm scheduler, got "
                         f"{facts.scheduler}")
    if not facts.pixel_space:
        raise ValueError("dynamic thresholding clamps pixels, and this model works in latent space: set threshold "
                         "to 0")


MODIFIER = Modifier(
    name="threshold", params=(THRESHOLD,), example={"threshold": 0.995}, on=lambda o: bool(o["threshold"]),
    formula="s = max(1, p-th percentile of |x̂0|); x̂0 ← clip(x̂0, −s, s) / s",
    paper="Saharia et al. 2022 (Imagen), dynamic thresholding", label="dynamic thresholding",
    scheduler_options=thresholding, check=check_threshold,
)
