"""Gradio-free tasks: one per endpoint, each an :class:`~tasks.spec.EndpointSpec` plus its ``run`` function.

Usable from a notebook or a script (``TEXT_TO_IMAGE(load_profile("toy"), prompt="a red circle")``); ``ui/``
only lays them out.
"""

from __future__ import annotations

from tasks.spec import Task


def all_tasks() -> tuple[Task, ...]:
    """Every endpoint of the app, in the order the tabs show them."""
    from tasks.adaln_zero import ADALN_ZERO
    from tasks.attention_binding import ATTENTION_BINDING
    from tasks.attention_cost import ATTENTION_COST
    from tasks.class_cfg import CLASS_CFG
    from tasks.classifier_guidance import CLASSIFIER_GUIDANCE
    from tasks.controlnet import CONTROLNET, CONTROLNET_MULTI, ZERO_CONV
    from tasks.distillation import DISTILL_COMPARE
    from tasks.guidance_compare import CG_VS_CFG
    from tasks.image_conditioning import IMAGE_CONDITIONING
    from tasks.playground import PLAYGROUND
    from tasks.puncond import PUNCOND
    from tasks.text_to_image import GUIDANCE_SWEEP, TEXT_TO_IMAGE

    return (TEXT_TO_IMAGE, GUIDANCE_SWEEP, CONTROLNET, CONTROLNET_MULTI, ZERO_CONV, CLASSIFIER_GUIDANCE, CLASS_CFG,
            CG_VS_CFG, IMAGE_CONDITIONING, PLAYGROUND, PUNCOND, ATTENTION_COST, ATTENTION_BINDING, ADALN_ZERO,
            DISTILL_COMPARE)
