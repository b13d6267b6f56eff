"""Schedulers by name, built from a model folder's scheduler config."""

from __future__ import annotations

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)

SCHEDULERS = {
    "ddim": (DDIMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler-a": (EulerAncestralDiscreteScheduler, {}),
    "dpm++2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "unipc": (UniPCMultistepScheduler, {}),
    "ddpm": (DDPMScheduler, {}),
}


def make_scheduler(name: str, config: dict, **options):
    """A fresh scheduler (schedulers carry per-run state, so never share one between requests); ``options``
    override the model's config (dynamic thresholding)."""
    if name not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {', '.join(SCHEDULERS)}; got {name!r}")
    cls, overrides = SCHEDULERS[name]
    return cls.from_config(config, **overrides, **options)


def step_kwargs_for(scheduler, pixel_space: bool) -> dict:
    """Pixel-space DDIM must step with the clipped (or thresholded) x0's epsilon, or backgrounds go grey."""
    clipped = scheduler.config.clip_sample or getattr(scheduler.config, "thresholding", False)
    if pixel_space and isinstance(scheduler, DDIMScheduler) and clipped:
        return {"use_clipped_model_output": True}
    return {}
