"""ADM joined to the one sampler loop: the UNet as a denoiser, the classifier as log p(y | x_t), and a configured run.

The networks live in ``models/architectures/adm.py``; the schedules and respacing in
``models/adapters/adm_schedule.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from guidance.rules import GuidanceRule
from guidance.sampler import ClassifierContext, ClassifierGuidance, ModelCall, SampleResult, sample
from models.adapters.adm_schedule import (
    ADMDDIMScheduler,
    ADMDDPMScheduler,
    ADMSchedule,
    make_adm_scheduler,
    make_schedule,
)
from models.architectures.adm import ADMClassifier, ADMUNet, check_flags


def _timestep_table(timestep_map: Sequence[int] | np.ndarray | Tensor, rescale: bool, num_original: int) -> Tensor:
    table = torch.as_tensor(np.asarray(timestep_map), dtype=torch.int64)
    # rescale_timesteps models were trained on t ∈ [0, 1000) whatever the chain length.
    return table.float() * (1000.0 / num_original) if rescale else table


class ADMDenoiser:
    """An ADM UNet as a loop denoiser: respaced index → original timestep, optional clipping of x0.

    ``clip_denoised`` returns ε re-derived from the clipped x0 (the original's ``clip_denoised``), so
    the loop's guidance acts on that ε exactly as the original's ``condition_score`` does. ``y`` is
    the class per sample for class-conditional models; ``y_uncond`` is only needed for rules with an
    unconditional branch. ``low_res`` is the conditioning image of an upsampler.
    """

    def __init__(
        self,
        model: nn.Module,
        y: Tensor | None = None,
        *,
        timestep_map: Sequence[int] | np.ndarray | Tensor,
        alphas_cumprod: np.ndarray | None = None,
        clip_denoised: bool = True,
        y_uncond: Tensor | None = None,
        low_res: Tensor | None = None,
        rescale_timesteps: bool = False,
        num_original_steps: int = 1000,
    ):
        if clip_denoised and alphas_cumprod is None:
            raise ValueError("clip_denoised needs the (respaced) alphas_cumprod")
        self.model = model
        self.y = {"cond": y, "uncond": y_uncond}
        self.timesteps = _timestep_table(timestep_map, rescale_timesteps, num_original_steps)
        self.alphas_cumprod = None if alphas_cumprod is None else np.asarray(alphas_cumprod, dtype=np.float64)
        self.clip_denoised = clip_denoised
        self.low_res = low_res
        self.class_cond = getattr(model, "num_classes", None) is not None

    def model_timestep(self, t: Tensor | int, batch: int) -> Tensor:
        """The original-scale timestep the networks see for respaced index ``t``."""
        return self.timesteps[int(t)].expand(batch)

    def _labels(self, call: ModelCall, per_branch: int, device: torch.device) -> Tensor | None:
        if not self.class_cond:
            return None
        parts = []
        for branch in call.branches:
            labels = self.y[branch]
            if labels is None:
                raise ValueError(f"class-conditional ADM needs labels for the {branch!r} branch")
            parts.append(torch.as_tensor(labels, device=device).long().expand(per_branch))
        return torch.cat(parts)

    def __call__(self, x: Tensor, t: Tensor, call: ModelCall) -> Tensor:
        rows = x.shape[0]
        per_branch = rows // len(call.branches)
        ts = self.model_timestep(t, rows).to(x.device)
        y = self._labels(call, per_branch, x.device)
        if self.low_res is not None:
            low = torch.cat([self.low_res.to(x)] * len(call.branches))
            out = self.model(x, ts, low, y)
        else:
            out = self.model(x, ts, y) if y is not None else self.model(x, ts)
        if not self.clip_denoised:
            return out
        c = x.shape[1]
        eps, rest = out[:, :c], out[:, c:]
        abar = float(self.alphas_cumprod[int(t)])
        recip, recipm1 = math.sqrt(1.0 / abar), math.sqrt(1.0 / abar - 1.0)
        x0 = (recip * x - recipm1 * eps).clamp(-1, 1)
        eps = (recip * x - x0) / recipm1
        return torch.cat([eps, rest], dim=1)


class ADMClassifierLogProb:
    """``log p(y | x_t)`` of a noise-aware classifier, in the loop's ``log_prob(x_t, t, ctx)`` form."""

    def __init__(
        self,
        classifier: nn.Module,
        y: Tensor,
        *,
        timestep_map: Sequence[int] | np.ndarray | Tensor,
        rescale_timesteps: bool = False,
        num_original_steps: int = 1000,
    ):
        self.classifier = classifier
        self.y = torch.as_tensor(y).long()
        self.timesteps = _timestep_table(timestep_map, rescale_timesteps, num_original_steps)

    def __call__(self, x: Tensor, t: Tensor | int, ctx: ClassifierContext | None = None) -> Tensor:
        ts = self.timesteps[int(t)].expand(x.shape[0]).to(x.device)
        log_probs = F.log_softmax(self.classifier(x.float(), ts).float(), dim=-1)
        y = self.y.to(x.device).expand(x.shape[0])
        return log_probs[torch.arange(x.shape[0], device=x.device), y]


@dataclass
class ADMSampling:
    """Everything :func:`guidance.sampler.sample` needs for an ADM model; :meth:`run` calls it."""

    schedule: ADMSchedule
    scheduler: ADMDDPMScheduler | ADMDDIMScheduler
    denoiser: ADMDenoiser
    classifier: ClassifierGuidance | None
    num_steps: int
    eps_channels: int

    @property
    def timestep_map(self) -> Tensor:
        """The original-scale t of each respaced index (what the networks are shown)."""
        return torch.as_tensor(self.schedule.timestep_map)

    def run(
        self, noise: Tensor, *, generator: torch.Generator | None = None, rule: GuidanceRule | None = None,
        **kwargs: Any,
    ) -> SampleResult:
        return sample(
            self.denoiser, self.scheduler, noise, rule or GuidanceRule("none"), steps=self.num_steps,
            classifier=self.classifier, eps_channels=self.eps_channels, generator=generator, **kwargs,
        )


def adm_sampling_setup(
    model: ADMUNet,
    classifier: ADMClassifier | None = None,
    *,
    y: Tensor | None = None,
    classifier_y: Tensor | None = None,
    classifier_scale: float = 1.0,
    noise_schedule: str = "linear",
    diffusion_steps: int = 1000,
    timestep_respacing: str = "",
    use_ddim: bool = False,
    clip_denoised: bool = True,
    rescale_timesteps: bool = False,
    num_steps: int | None = None,
    **flags: Any,
) -> ADMSampling:
    """Scheduler, denoiser and classifier guidance for ``model`` from the official sampling flags.

    Ancestral sampling (``use_ddim=False``) shifts the mean by s·Σ·∇log p with the step's learned Σ;
    DDIM shifts ε by −√(1−ᾱ)·s·∇log p. ``y`` conditions a class-conditional model; the classifier
    targets ``classifier_y`` (default ``y``). ``num_steps`` defaults to the respaced length (every
    step of the chain). Model-construction flags in ``flags`` are accepted and ignored.
    """
    check_flags(flags)
    for name in ("use_kl", "predict_xstart", "rescale_learned_sigmas"):
        if flags.get(name):
            raise ValueError(f"{name}=True is not supported (the released models use eps prediction)")
    schedule = make_schedule(noise_schedule, int(diffusion_steps), timestep_respacing)
    learn_sigma = getattr(model, "out_channels", 6) == 2 * getattr(model, "in_channels", 3)
    scheduler = make_adm_scheduler(schedule, use_ddim=use_ddim, learn_sigma=learn_sigma)
    common = dict(timestep_map=schedule.timestep_map, rescale_timesteps=rescale_timesteps,
                  num_original_steps=schedule.num_original_steps)
    denoiser = ADMDenoiser(model, y, alphas_cumprod=schedule.alphas_cumprod, clip_denoised=clip_denoised, **common)
    guidance = None
    target = classifier_y if classifier_y is not None else y
    if classifier is not None:
        if target is None:
            raise ValueError("classifier guidance needs target labels (y or classifier_y)")
        log_prob = ADMClassifierLogProb(classifier, target, **common)
        if use_ddim:
            guidance = ClassifierGuidance(log_prob, float(classifier_scale), mode="eps")
        else:
            guidance = ClassifierGuidance(log_prob, float(classifier_scale), mode="mean",
                                          variance=scheduler.step_variance)
    in_ch = getattr(model, "in_channels", 3)
    return ADMSampling(schedule, scheduler, denoiser, guidance, num_steps or len(schedule), in_ch)
