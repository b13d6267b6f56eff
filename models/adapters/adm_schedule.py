"""ADM (guided-diffusion) noise schedules, timestep respacing and the two schedulers the sampler loop drives.

Written from the descriptions in Nichol & Dhariwal 2021 ("Improved DDPM": cosine schedule, learned-range
variance, respacing) and Dhariwal & Nichol 2021 ("Diffusion Models Beat GANs": classifier guidance), and
checked against the golden data in ``shared/golden/adm``.

All tables are computed in float64, as the original code does, and only the per-step coefficients are
rounded to the sample's dtype. That matters near t = 0, where 1 − ᾱ ≈ 1e-4 and float32 arithmetic on
ᾱ itself would lose three to four significant digits of √(1 − ᾱ).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.schedulers.scheduling_ddim import DDIMSchedulerOutput
from diffusers.schedulers.scheduling_ddpm import DDPMSchedulerOutput
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor

NOISE_SCHEDULES = ("linear", "cosine")


def named_betas(noise_schedule: str, num_steps: int) -> np.ndarray:
    """β_t (float64) of the ``linear`` (Ho et al., rescaled to ``num_steps``) or ``cosine`` schedule."""
    if num_steps < 1:
        raise ValueError(f"diffusion_steps must be at least 1, got {num_steps}")
    if noise_schedule == "linear":
        # The 1e-4 .. 0.02 range is defined for 1000 steps; other lengths keep the same total noise.
        scale = 1000 / num_steps
        return np.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=np.float64)
    if noise_schedule == "cosine":
        def alpha_bar(s: float) -> float:
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        # β is capped below 1 so the last step does not destroy the signal in one jump.
        return np.array(
            [min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), 0.999) for i in range(num_steps)],
            dtype=np.float64,
        )
    raise ValueError(f"noise_schedule must be one of {NOISE_SCHEDULES}, got {noise_schedule!r}")


def space_timesteps(num_timesteps: int, section_counts: str | Sequence[int]) -> set[int]:
    """The original timesteps kept by respacing.

    ``"ddimN"``: the evenly strided set ``range(0, T, k)`` with exactly N elements (smallest such k).
    Otherwise ``"a,b,c"`` (or a list): split ``[0, T)`` into equal sections (the first ``T % n`` one step
    longer) and take ``count`` evenly spaced steps from each, both ends included, rounded half-to-even.
    """
    if isinstance(section_counts, str):
        text = section_counts.strip()
        if text.startswith("ddim"):
            wanted = int(text[len("ddim"):])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == wanted:
                    return set(range(0, num_timesteps, stride))
            raise ValueError(f"cannot take exactly {wanted} evenly strided steps from {num_timesteps}")
        if not text:
            return set(range(num_timesteps))
        counts = [int(part) for part in text.split(",")]
    else:
        counts = [int(c) for c in section_counts]
    size_per, extra = divmod(num_timesteps, len(counts))
    start = 0
    kept: list[int] = []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"cannot take {count} steps from a section of {size} steps")
        stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        position = 0.0
        for _ in range(count):
            # Built-in round (half-to-even) is part of the definition: the golden maps depend on it.
            kept.append(start + round(position))
            position += stride
        start += size
    return set(kept)


@dataclass
class ADMSchedule:
    """A (possibly respaced) schedule and every float64 table a sampler step needs.

    ``timestep_map[i]`` is the original timestep of respaced index ``i``: what the UNet and the
    classifier are actually given.
    """

    betas: np.ndarray
    timestep_map: np.ndarray
    num_original_steps: int
    alphas_cumprod: np.ndarray = field(init=False)
    alphas_cumprod_prev: np.ndarray = field(init=False)
    posterior_variance: np.ndarray = field(init=False)
    posterior_log_variance_clipped: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.betas = np.asarray(self.betas, dtype=np.float64)
        self.timestep_map = np.asarray(self.timestep_map, dtype=np.int64)
        if self.betas.ndim != 1 or len(self.betas) != len(self.timestep_map):
            raise ValueError("betas and timestep_map must be 1-D and of the same length")
        self.alphas_cumprod = np.cumprod(1.0 - self.betas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.posterior_variance = self.betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # The posterior variance is 0 at t = 0; its log is taken from t = 1 so it stays finite.
        pv = self.posterior_variance
        self.posterior_log_variance_clipped = np.log(np.append(pv[1], pv[1:]) if len(pv) > 1 else self.betas)

    def __len__(self) -> int:
        return len(self.betas)


def make_schedule(
    noise_schedule: str = "linear", diffusion_steps: int = 1000, timestep_respacing: str = ""
) -> ADMSchedule:
    """The schedule as guided-diffusion's flags describe it; ``""`` keeps every step."""
    betas = named_betas(noise_schedule, diffusion_steps)
    keep = sorted(space_timesteps(diffusion_steps, timestep_respacing or str(diffusion_steps)))
    alphas_cumprod = np.cumprod(1.0 - betas)
    # A respaced chain keeps ᾱ at the kept steps exactly; its β are whatever links consecutive kept ᾱ.
    kept_abar = alphas_cumprod[keep]
    new_betas = 1.0 - kept_abar / np.append(1.0, kept_abar[:-1])
    if len(keep) == diffusion_steps:  # no respacing: keep the exact β rather than a round trip through ᾱ
        new_betas = betas
    return ADMSchedule(betas=new_betas, timestep_map=np.array(keep), num_original_steps=diffusion_steps)


class _ADMTables:
    """Shared float64 bookkeeping for the two schedulers, derived from ``config.trained_betas``.

    The diffusers base classes keep float32 ``alphas_cumprod`` (what the sampler loop reads for
    ᾱ_t); the steps themselves use these float64 values.
    """

    def _abar64(self) -> np.ndarray:
        cached = self.__dict__.get("_adm_abar")
        if cached is None:
            if self.config.trained_betas is None:
                raise ValueError(f"{type(self).__name__} needs trained_betas (use make_adm_scheduler)")
            cached = np.cumprod(1.0 - np.asarray(self.config.trained_betas, dtype=np.float64))
            self.__dict__["_adm_abar"] = cached
        return cached

    def _previous(self, t: int) -> int:
        # The chain always steps to the next timestep in the list (then to "clean", -1), whatever the
        # spacing, so a shortened chain is a respacing of the respaced one.
        if self.num_inference_steps is None:
            return t - 1
        hits = (self.timesteps.cpu() == t).nonzero()
        if len(hits) == 0:
            raise ValueError(f"timestep {t} is not in this scheduler's timesteps")
        index = int(hits[0, 0])
        return int(self.timesteps[index + 1]) if index + 1 < len(self.timesteps) else -1

    def _pair(self, t: int) -> tuple[float, float]:
        abar = self._abar64()
        prev = self._previous(t)
        return float(abar[t]), (float(abar[prev]) if prev >= 0 else 1.0)

    def _final_step_posterior_variance(self, t: int) -> float:
        """Posterior variance of the step *above* the final one, used where the final one is 0."""
        abar = self._abar64()
        if self.num_inference_steps is None:
            above = t + 1 if t + 1 < len(abar) else None
        else:
            steps = [int(s) for s in self.timesteps]
            index = steps.index(t)
            above = steps[index - 1] if index > 0 else None
        a_t = float(abar[t])
        if above is None:  # a one-step chain has no step above: fall back to β of this step
            return 1.0 - a_t
        a_above = float(abar[above])
        return (1.0 - a_t) / (1.0 - a_above) * (1.0 - a_above / a_t)

    @staticmethod
    def _split(model_output: Tensor, sample: Tensor) -> tuple[Tensor, Tensor | None]:
        c = sample.shape[1]
        if model_output.shape[1] == 2 * c:
            return model_output[:, :c], model_output[:, c:]
        return model_output, None


class ADMDDPMScheduler(_ADMTables, DDPMScheduler):
    """Ancestral sampling exactly as guided-diffusion's ``p_sample`` (eps prediction).

    Differences from :class:`~diffusers.DDPMScheduler`: float64 coefficients; ``learned_range`` at the
    final step interpolates towards the posterior variance of the step above (guided-diffusion's
    ``posterior_log_variance_clipped``) rather than log(1e-20); ``fixed_large`` likewise uses that
    posterior variance at the final step; ``step`` accepts ``variance_noise`` (as DDIM's does) so a
    step can be replayed with stored noise. :meth:`step_variance` is Σ_t for mean-shift classifier
    guidance (``ClassifierGuidance(mode="mean", variance=scheduler.step_variance)``).
    """

    def step_log_variance(self, timestep: int | Tensor, model_output: Tensor, sample: Tensor) -> Tensor:
        """log Σ_t of the step from ``timestep``, broadcast to ``sample``'s shape."""
        t = int(timestep)
        a_t, a_prev = self._pair(t)
        beta = 1.0 - a_t / a_prev
        posterior = beta * (1.0 - a_prev) / (1.0 - a_t)
        if posterior <= 0.0:
            posterior = self._final_step_posterior_variance(t)
        vtype = self.config.variance_type
        _, v = self._split(model_output, sample)
        if vtype == "learned_range":
            if v is None:
                raise ValueError("variance_type 'learned_range' needs the model's variance channels")
            frac = (v + 1) / 2
            return frac * math.log(beta) + (1 - frac) * math.log(posterior)
        if vtype == "fixed_small":
            value = math.log(max(beta * (1.0 - a_prev) / (1.0 - a_t), 1e-20))
        elif vtype == "fixed_large":
            value = math.log(beta if a_prev < 1.0 else posterior)
        else:
            raise ValueError(f"ADMDDPMScheduler supports learned_range, fixed_small and fixed_large, not {vtype!r}")
        return torch.full_like(sample, value)

    def step_variance(self, timestep: int | Tensor, model_output: Tensor, sample: Tensor) -> Tensor:
        """Σ_t = exp(log Σ_t): the factor of the classifier gradient in the guided mean."""
        return self.step_log_variance(timestep, model_output, sample).exp()

    def step(
        self,
        model_output: Tensor,
        timestep: int | Tensor,
        sample: Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
        variance_noise: Tensor | None = None,
    ) -> DDPMSchedulerOutput | tuple:
        if self.config.prediction_type != "epsilon":
            raise ValueError("ADMDDPMScheduler implements eps prediction only")
        t = int(timestep)
        eps, _ = self._split(model_output, sample)
        a_t, a_prev = self._pair(t)
        beta = 1.0 - a_t / a_prev
        x0 = math.sqrt(1.0 / a_t) * sample - math.sqrt(1.0 / a_t - 1.0) * eps
        if self.config.clip_sample:
            x0 = x0.clamp(-self.config.clip_sample_range, self.config.clip_sample_range)
        coef_x0 = beta * math.sqrt(a_prev) / (1.0 - a_t)
        coef_xt = (1.0 - a_prev) * math.sqrt(a_t / a_prev) / (1.0 - a_t)
        prev_sample = coef_x0 * x0 + coef_xt * sample
        # The step into the clean image adds no noise (t = 0 on a full chain, any t on a shortened one).
        if a_prev < 1.0:
            if variance_noise is None:
                variance_noise = randn_tensor(eps.shape, generator=generator, device=eps.device, dtype=eps.dtype)
            log_var = self.step_log_variance(t, model_output, sample)
            prev_sample = prev_sample + torch.exp(0.5 * log_var) * variance_noise.to(prev_sample)
        if not return_dict:
            return prev_sample, x0
        return DDPMSchedulerOutput(prev_sample=prev_sample, pred_original_sample=x0)


class ADMDDIMScheduler(_ADMTables, DDIMScheduler):
    """DDIM exactly as guided-diffusion's ``ddim_sample`` (eps prediction).

    The variance channels of a learned-sigma model are dropped. ε is always re-derived from x0 (which
    is clipped only if ``clip_sample``), as the original does. For classifier guidance with the
    original's order (clip x0 first, then guide ε), keep ``clip_sample=False`` here and let the
    denoiser clip (``ADMDenoiser(clip_denoised=True)``).
    """

    def step(
        self,
        model_output: Tensor,
        timestep: int | Tensor,
        sample: Tensor,
        eta: float = 0.0,
        use_clipped_model_output: bool = False,
        generator: torch.Generator | None = None,
        variance_noise: Tensor | None = None,
        return_dict: bool = True,
    ) -> DDIMSchedulerOutput | tuple:
        if self.config.prediction_type != "epsilon":
            raise ValueError("ADMDDIMScheduler implements eps prediction only")
        t = int(timestep)
        eps, _ = self._split(model_output, sample)
        a_t, a_prev = self._pair(t)
        recip, recipm1 = math.sqrt(1.0 / a_t), math.sqrt(1.0 / a_t - 1.0)
        x0 = recip * sample - recipm1 * eps
        if self.config.clip_sample:
            x0 = x0.clamp(-self.config.clip_sample_range, self.config.clip_sample_range)
        eps = (recip * sample - x0) / recipm1
        sigma = eta * math.sqrt((1.0 - a_prev) / (1.0 - a_t)) * math.sqrt(1.0 - a_t / a_prev)
        prev_sample = math.sqrt(a_prev) * x0 + math.sqrt(max(1.0 - a_prev - sigma**2, 0.0)) * eps
        if sigma > 0:
            if variance_noise is None:
                variance_noise = randn_tensor(eps.shape, generator=generator, device=eps.device, dtype=eps.dtype)
            prev_sample = prev_sample + sigma * variance_noise.to(prev_sample)
        if not return_dict:
            return prev_sample, x0
        return DDIMSchedulerOutput(prev_sample=prev_sample, pred_original_sample=x0)


def make_adm_scheduler(
    schedule: ADMSchedule, *, use_ddim: bool = False, learn_sigma: bool = True, clip_sample: bool | None = None
) -> ADMDDPMScheduler | ADMDDIMScheduler:
    """A diffusers scheduler over the respaced chain: ``num_train_timesteps = len(schedule)``.

    ``clip_sample`` defaults to True for ancestral sampling and False for DDIM (see
    :class:`ADMDDIMScheduler` for why DDIM leaves clipping to the denoiser). Trailing spacing makes a
    shortened chain still start from the noisiest step.
    """
    betas = [float(b) for b in schedule.betas]  # plain floats keep float64 in the config
    common = dict(num_train_timesteps=len(schedule), trained_betas=betas, prediction_type="epsilon",
                  timestep_spacing="trailing")
    if use_ddim:
        return ADMDDIMScheduler(**common, clip_sample=bool(clip_sample), set_alpha_to_one=True)
    return ADMDDPMScheduler(
        **common,
        clip_sample=True if clip_sample is None else clip_sample,
        variance_type="learned_range" if learn_sigma else "fixed_large",
    )
