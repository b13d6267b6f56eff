"""Guidance methods beyond CFG against diffusers' own guiders and pipelines, step for step.

Rule level: each method's combine over several steps equals the diffusers guider fed the same predictions
(APG's momentum state included). Loop level: our sampler on a tiny SD equals a reference loop built from
diffusers' components and guider, and PAG equals ``StableDiffusionPAGPipeline``. Each comparison is shown to be
able to fail once (a different parameter moves the output).
"""

from __future__ import annotations

import pytest
import torch
from diffusers.guiders import (
    AdaptiveProjectedGuidance,
    ClassifierFreeGuidance,
    ClassifierFreeZeroStarGuidance,
    TangentialClassifierFreeGuidance,
)

from guidance.methods.base import GuideStep
from guidance.rules import GuidanceRule, guide
from models.loading.sd import load_sd
from models.runtime import pick_runtime
from pipelines.schedulers import make_scheduler
from pipelines.text_to_image import text_to_image

CPU32 = pick_runtime("cpu", "float32")
PROMPT, NEGATIVE = "a photo of a red cat", "blue"
SMALL = dict(steps=5, width=32, height=32, seed=3, num_images=2)


def predictions(steps: int = 4, shape=(2, 4, 8, 8), seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(shape, generator=g), torch.randn(shape, generator=g)) for _ in range(steps)]


def ours(rule: GuidanceRule, pairs) -> list[torch.Tensor]:
    state: dict = {}
    return [guide(u, c, rule, step=GuideStep(i, len(pairs), 0.5), state=state) for i, (u, c) in enumerate(pairs)]


def theirs(guider, pairs) -> list[torch.Tensor]:
    out = []
    for i, (u, c) in enumerate(pairs):
        guider.set_state(step=i, num_inference_steps=len(pairs), timestep=torch.tensor(999 - i))
        if i == 0 and getattr(guider, "adaptive_projected_guidance_momentum", None) is not None:
            from diffusers.guiders.adaptive_projected_guidance import MomentumBuffer

            guider.momentum_buffer = MomentumBuffer(guider.adaptive_projected_guidance_momentum)
        out.append(guider.forward(c, u).pred)
    return out


def close(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("w,beta,r,eta", [(7.5, -0.5, 15.0, 0.0), (4.0, 0.0, 0.0, 0.3), (12.0, 0.6, 2.0, 1.0)])
def test_apg_equals_diffusers_step_for_step_with_its_momentum(w, beta, r, eta):
    pairs = predictions()
    rule = GuidanceRule("apg", w, eta=eta, apg_momentum=beta, apg_norm_threshold=r)
    reference = AdaptiveProjectedGuidance(guidance_scale=w - 1, use_original_formulation=True, eta=eta,
                                          adaptive_projected_guidance_momentum=beta or None,
                                          adaptive_projected_guidance_rescale=r)
    assert close(ours(rule, pairs), theirs(reference, pairs)) <= 1e-5
    if beta:  # the momentum matters: without it the later steps differ
        no_momentum = GuidanceRule("apg", w, eta=eta, apg_momentum=0.0, apg_norm_threshold=r)
        assert close(ours(no_momentum, pairs)[1:], theirs(reference, pairs)[1:]) > 1e-3


@pytest.mark.parametrize("w,zero_steps", [(5.0, 1), (7.5, 2), (3.0, 0)])
def test_cfg_zero_star_equals_diffusers(w, zero_steps):
    pairs = predictions()
    rule = GuidanceRule("cfg-zero-star", w, zero_init_steps=zero_steps)
    reference = ClassifierFreeZeroStarGuidance(guidance_scale=w, zero_init_steps=zero_steps)
    assert close(ours(rule, pairs), theirs(reference, pairs)) <= 1e-5
    assert close(ours(GuidanceRule("cfg", w), pairs)[zero_steps:], theirs(reference, pairs)[zero_steps:]) > 1e-3


@pytest.mark.parametrize("w", [2.0, 7.5])
def test_tcfg_equals_diffusers(w):
    pairs = predictions()
    reference = TangentialClassifierFreeGuidance(guidance_scale=w)
    assert close(ours(GuidanceRule("tcfg", w), pairs), theirs(reference, pairs)) <= 1e-4
    assert close(ours(GuidanceRule("cfg", w), pairs), theirs(reference, pairs)) > 1e-3


@pytest.mark.parametrize("start,end", [(0.0, 0.5), (0.25, 0.75), (0.5, 1.0)])
def test_guidance_interval_equals_diffusers_start_stop(start, end):
    pairs = predictions(steps=8)
    rule = GuidanceRule("cfg", 6.0, interval_start=start, interval_end=end)
    reference = ClassifierFreeGuidance(guidance_scale=6.0, start=start, stop=end)
    assert close(ours(rule, pairs), theirs(reference, pairs)) == 0.0
    outside = [i for i in range(8) if not rule.active_at(i, 8)]
    assert outside and all(rule.branches_at(i, 8) == ("cond",) for i in outside)  # no unconditional call there


def test_cfg_pp_is_the_paper_s_ddim_update():
    """x_{t−1} = √ᾱ_{t−1} x̂0(u + λ(c − u)) + √(1−ᾱ_{t−1}) u, through the scheduler's own DDIM step."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, set_alpha_to_one=False,
                          clip_sample=False)
    sched.set_timesteps(10)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 8, 8, generator=g)
    lam = 0.6
    for t in sched.timesteps[:3]:
        u, c = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
        a = sched.alphas_cumprod[int(t)]
        prev = int(t) - 1000 // 10
        a_prev = sched.alphas_cumprod[prev] if prev >= 0 else sched.final_alpha_cumprod
        guided = u + lam * (c - u)
        paper = a_prev.sqrt() * (x - (1 - a).sqrt() * guided) / a.sqrt() + (1 - a_prev).sqrt() * u
        eps = guide(u, c, GuidanceRule("cfg++", lam), step=GuideStep(0, 10, a, a_prev))
        stepped = sched.step(eps, t, x, eta=0.0, return_dict=False)[0]
        assert (stepped - paper).abs().max().item() <= 1e-4
        plain = sched.step(guided, t, x, eta=0.0, return_dict=False)[0]
        assert (plain - paper).abs().max().item() > 1e-3  # CFG's DDIM step is not CFG++'s
        x = stepped


def test_method_parameters_are_checked_with_clear_messages():
    for kwargs, word in ((dict(name="cfg++", scale=1.5), "cfg\\+\\+ takes scale"),
                         (dict(name="apg", apg_momentum=1.0), "apg_momentum"),
                         (dict(name="apg", apg_norm_threshold=-1.0), "apg_norm_threshold"),
                         (dict(name="cfg-zero-star", zero_init_steps=1.5), "whole number"),
                         (dict(interval_start=0.6, interval_end=0.4), "interval_start"),
                         (dict(threshold=0.3), "threshold"), (dict(pag_layers="left"), "pag_layers"),
                         (dict(pag_scale=float("nan")), "pag_scale")):
        with pytest.raises(ValueError, match=word):
            GuidanceRule(**kwargs)
    assert GuidanceRule(threshold=0.0).threshold == 0.0 and GuidanceRule(threshold=0.995).threshold == 0.995


# ----------------------------------------------------------------------------------------------------------------
# Through the loop, on a tiny SD, against loops built from diffusers' own parts


def reference_loop(sd, combine, steps: int, seed: int, num_images: int, size: int = 32) -> torch.Tensor:
    """StableDiffusionPipeline's loop written out (DDIM, prompt and negative prompt), combining with ``combine``."""
    from condition.text import encode_prompts
    from models.runtime import cpu_generator
    from pipelines.text_to_image import decode

    sched = make_scheduler("ddim", sd.scheduler_config)
    sched.set_timesteps(steps)
    text = encode_prompts(sd.tokenizer, sd.text_encoder, [NEGATIVE, PROMPT], sd.device).states
    context = torch.cat([text[:1].repeat(num_images, 1, 1), text[1:].repeat(num_images, 1, 1)])
    latent = size // sd.vae_scale_factor
    x = torch.randn((num_images, 4, latent, latent), generator=cpu_generator(seed))
    for i, t in enumerate(sched.timesteps):
        out = sd.unet(torch.cat([x, x]), t, encoder_hidden_states=context).sample
        u, c = out.chunk(2)
        x = sched.step(combine(i, u, c), t, x, eta=0.0, return_dict=False)[0]
    return decode(sd, x)


def guider_combine(guider, steps: int):
    def combine(i, u, c):
        guider.set_state(step=i, num_inference_steps=steps, timestep=torch.tensor(0))
        return guider.forward(c, u).pred

    return combine


@pytest.mark.parametrize("name,guider,options", [
    ("apg", lambda: AdaptiveProjectedGuidance(guidance_scale=6.5, use_original_formulation=True, eta=0.0,
                                              adaptive_projected_guidance_momentum=-0.5,
                                              adaptive_projected_guidance_rescale=15.0),
     dict(apg_momentum=-0.5, apg_norm_threshold=15.0, eta=0.0)),
    ("cfg-zero-star", lambda: ClassifierFreeZeroStarGuidance(guidance_scale=7.5, zero_init_steps=1),
     dict(zero_init_steps=1)),
    ("tcfg", lambda: TangentialClassifierFreeGuidance(guidance_scale=7.5), {}),
    ("cfg", lambda: ClassifierFreeGuidance(guidance_scale=7.5, start=0.2, stop=0.8),
     dict(interval_start=0.2, interval_end=0.8)),
])
def test_loop_equals_a_diffusers_guider_loop(tiny_sd_folder, name, guider, options):
    sd = load_sd(str(tiny_sd_folder), CPU32)
    reference_guider = guider()
    if name == "apg":
        from diffusers.guiders.adaptive_projected_guidance import MomentumBuffer

        reference_guider.momentum_buffer = MomentumBuffer(-0.5)
    expected = reference_loop(sd, guider_combine(reference_guider, SMALL["steps"]), SMALL["steps"], SMALL["seed"],
                              SMALL["num_images"])
    got = text_to_image(sd, PROMPT, negative_prompt=NEGATIVE, rule=GuidanceRule(name, 7.5, **options),
                        scheduler="ddim", **SMALL).images
    assert (got - expected).abs().max().item() <= 1e-5, name
    other = text_to_image(sd, PROMPT, negative_prompt=NEGATIVE, rule=GuidanceRule("cfg", 7.5), scheduler="ddim",
                          **SMALL).images
    assert (other - expected).abs().max().item() > 1e-3  # the comparison can tell methods apart


@pytest.mark.parametrize("guidance,scale", [("cfg", 5.0), ("none", 1.0)])
def test_pag_equals_stable_diffusion_pag_pipeline(tiny_sd_folder, guidance, scale):
    from diffusers import StableDiffusionPAGPipeline

    sd = load_sd(str(tiny_sd_folder), CPU32)
    pipe = StableDiffusionPAGPipeline(vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer, unet=sd.unet,
                                      scheduler=make_scheduler("ddim", sd.scheduler_config), safety_checker=None,
                                      feature_extractor=None, requires_safety_checker=False, pag_applied_layers="mid")
    pipe.set_progress_bar_config(disable=True)
    try:
        expected = pipe(PROMPT, negative_prompt=NEGATIVE if guidance == "cfg" else None, guidance_scale=scale,
                        pag_scale=3.0, num_inference_steps=5, height=32, width=32, num_images_per_prompt=2,
                        generator=torch.Generator().manual_seed(3), output_type="pt").images
    finally:
        sd.unet.set_default_attn_processor()  # the pipeline installed its own processors on our cached UNet
    got = text_to_image(sd, PROMPT, negative_prompt=NEGATIVE, rule=GuidanceRule(guidance, scale, pag_scale=3.0),
                        scheduler="ddim", **SMALL).images
    assert (got - expected).abs().max().item() <= 1e-5
    without = text_to_image(sd, PROMPT, negative_prompt=NEGATIVE, rule=GuidanceRule(guidance, scale),
                            scheduler="ddim", **SMALL).images
    assert (without - expected).abs().max().item() > 1e-3
    assert all(type(p).__name__ != "PerturbedSelfAttention" for p in sd.unet.attn_processors.values())  # restored


def test_autoguidance_guides_with_the_weak_model(tiny_sd_folder, tmp_path):
    """ε = ε_weak(x|c) + w (ε(x|c) − ε_weak(x|c)), the weak model conditioned like the main one."""
    from testing.tiny import build_tiny_sd

    sd = load_sd(str(tiny_sd_folder), CPU32)
    weak = load_sd(str(build_tiny_sd(tmp_path / "weak", seed=5)), CPU32).unet
    from condition.text import encode_prompts
    from models.runtime import cpu_generator
    from pipelines.text_to_image import decode

    sched = make_scheduler("ddim", sd.scheduler_config)
    sched.set_timesteps(4)
    cond = encode_prompts(sd.tokenizer, sd.text_encoder, [PROMPT], sd.device).states.repeat(2, 1, 1)
    x = torch.randn((2, 4, 16, 16), generator=cpu_generator(3))
    for t in sched.timesteps:
        c = sd.unet(x, t, encoder_hidden_states=cond).sample
        w = weak(x, t, encoder_hidden_states=cond).sample
        x = sched.step(w + 2.0 * (c - w), t, x, eta=0.0, return_dict=False)[0]
    expected = decode(sd, x)
    got = text_to_image(sd, PROMPT, rule=GuidanceRule("autoguidance", 2.0), scheduler="ddim", weak=weak,
                        **dict(SMALL, steps=4)).images
    assert (got - expected).abs().max().item() <= 1e-5
    with pytest.raises(ValueError, match="autoguide"):
        text_to_image(sd, PROMPT, rule=GuidanceRule("autoguidance", 2.0), scheduler="ddim", **dict(SMALL, steps=2))


def test_cfg_pp_refuses_other_schedulers_and_thresholding_latents(tiny_sd_folder):
    sd = load_sd(str(tiny_sd_folder), CPU32)
    with pytest.raises(ValueError, match="DDIM step"):
        text_to_image(sd, PROMPT, rule=GuidanceRule("cfg++", 0.6), scheduler="euler", **SMALL)
    with pytest.raises(ValueError, match="latent space"):
        text_to_image(sd, PROMPT, rule=GuidanceRule("cfg", 5.0, threshold=0.995), scheduler="ddim", **SMALL)


def test_dynamic_thresholding_equals_diffusers_ddim_thresholding_on_the_toy_pixel_model():
    """Imagen's dynamic thresholding through our loop equals DDIMScheduler(thresholding=True) in a loop written
    from diffusers' parts, on the shipped pixel-space toy UNet at a high scale (where x̂0 leaves [−1, 1])."""
    from diffusers import DDIMScheduler

    from condition.text import encode_prompts
    from models.loading.sd import load_role_sd
    from models.profiles import load_profile
    from models.runtime import cpu_generator

    sd = load_role_sd(load_profile("toy"), CPU32)
    w, steps, prompt = 20.0, 8, "a red circle"
    sched = DDIMScheduler.from_config(sd.scheduler_config, thresholding=True, dynamic_thresholding_ratio=0.995,
                                      sample_max_value=float("inf"))
    sched.set_timesteps(steps)
    text = encode_prompts(sd.tokenizer, sd.text_encoder, ["", prompt], sd.device).states.repeat_interleave(2, 0)
    x = torch.randn((2, 3, 32, 32), generator=cpu_generator(5))
    for t in sched.timesteps:
        u, c = sd.unet(torch.cat([x, x]), t, encoder_hidden_states=text).sample.chunk(2)
        x = sched.step(u + w * (c - u), t, x, eta=0.0, use_clipped_model_output=True, return_dict=False)[0]
    expected = (x / 2 + 0.5).clamp(0, 1)
    common = dict(steps=steps, seed=5, num_images=2, scheduler="ddim")
    got = text_to_image(sd, prompt, rule=GuidanceRule("cfg", w, threshold=0.995), **common).images
    assert (got - expected).abs().max().item() <= 1e-5
    clipped_only = text_to_image(sd, prompt, rule=GuidanceRule("cfg", w), **common).images
    assert (clipped_only - expected).abs().max().item() > 1e-2  # thresholding changes the images: it can fail
