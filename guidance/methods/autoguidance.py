"""Autoguidance: guide the model with a weaker version of itself instead of its unconditional branch."""

from __future__ import annotations

from guidance.methods.base import Method
from guidance.methods.cfg import cfg

METHOD = Method(
    name="autoguidance", combine=cfg, formula="ε = ε_weak(x|c) + w (ε(x|c) − ε_weak(x|c))",
    paper="Karras et al. 2024, Guiding a Diffusion Model with a Bad Version of Itself", uncond_branch="weak",
    label="autoguidance",
    defaults_from="the weak model is the profile's autoguide role (toy: the same UNet at half width, 1/8 training)",
)
