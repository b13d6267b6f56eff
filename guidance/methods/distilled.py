"""Guidance distillation: the guided prediction from one call of a student that takes w as a condition."""

from __future__ import annotations

from guidance.methods.base import Method
from guidance.methods.none import conditional_only

# The student (the profile's "distilled" role) already predicts ε̃ = u + w (c − u) of its teacher: the loop takes its
# one conditional call as it is (``conditional_only``), and the task hands w to the student's guidance embedding.
METHOD = Method(
    name="distilled", combine=conditional_only,
    formula="ε = ε_student(x, t | c, w) ≈ u + w (c − u) of the teacher: one model call, w through the timestep "
            "embedding",
    paper="Meng et al. 2023, On Distillation of Guided Diffusion Models (stage one)", needs_uncond=False,
    model_role="distilled", label="distilled student (one call)",
    defaults_from="w in the range the student was trained on (its guidance.json; toy: 1–12)",
)
