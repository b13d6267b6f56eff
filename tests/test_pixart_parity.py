"""PixArt-Σ through the one sampler loop equals diffusers' ``PixArtSigmaPipeline`` on tiny random models saved in the
real repos' layouts (testing/tiny_pixart.py), loaded through ``models.loading.pixart.load_pixart``.

The pipeline gets the very modules we loaded and the scheduler class the base repo's scheduler_config.json names
(DPM-Solver++), read from the folder as the pipeline would by default; our side runs ``scheduler="own"``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from condition.pixart_text import MAX_SEQUENCE_LENGTH, encode_t5_prompts
from guidance.rules import METHODS, GuidanceRule
from guidance.sampler import ModelCall
from models.adapters.pixart_denoiser import PixArtDenoiser
from models.loading.pixart import PixArtComponents, load_pixart, text_encoder_dtype
from models.loading.sd import ModelUnavailable
from models.runtime import Runtime, pick_runtime
from pipelines.pixart import OWN, pixart_to_image
from pipelines.schedulers import SCHEDULERS
from testing.tiny_pixart import build_tiny_pixart, build_tiny_pixart_base

TOLERANCE = 1 / 255  # one 8-bit grey level
SIZE = 64  # the tiny transformer's native size: sample_size 8 × the VAE's factor 8


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return build_tiny_pixart(tmp_path_factory.mktemp("pixart"))


@pytest.fixture(scope="module")
def pixart(folders) -> PixArtComponents:
    return load_pixart(str(folders[0]), str(folders[1]), pick_runtime("cpu", "float32"))


@pytest.fixture(scope="module")
def pipe(pixart, folders):
    import diffusers
    from diffusers import PixArtSigmaPipeline

    name = pixart.scheduler_config["_class_name"]
    assert name == "DPMSolverMultistepScheduler"  # what the real repo's scheduler_config.json names
    scheduler = getattr(diffusers, name).from_pretrained(folders[1], subfolder="scheduler")
    pipeline = PixArtSigmaPipeline(transformer=pixart.transformer, text_encoder=pixart.text_encoder,
                                   tokenizer=pixart.tokenizer, vae=pixart.vae, scheduler=scheduler)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def reference(pipe, prompt: str, negative: str, scale: float, steps: int, seed: int, width: int = SIZE,
              height: int = SIZE, num_images: int = 1, output_type: str = "pt") -> torch.Tensor:
    images = pipe(prompt, negative_prompt=negative, guidance_scale=scale, num_inference_steps=steps, height=height,
                  width=width, num_images_per_prompt=num_images, generator=torch.Generator().manual_seed(seed),
                  output_type=output_type, clean_caption=False, use_resolution_binning=False).images
    if output_type == "np":  # [B, H, W, 3] float in [0, 1]
        return torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).float()
    return images.float().cpu()


CASES = [  # prompt, negative prompt, w, steps, seed, width, height, images, output type
    ("a red circle", "", 4.5, 8, 3, SIZE, SIZE, 1, "pt"),
    ("A photo of a big green CAT on the square", "blue dog", 3.0, 6, 11, 96, 64, 2, "np"),
]


@pytest.mark.parametrize("case", CASES, ids=["default-negative", "negative-2-images-96x64"])
def test_cfg_matches_pixart_sigma_pipeline(pixart, pipe, case):
    prompt, negative, scale, steps, seed, width, height, count, output_type = case
    ours = pixart_to_image(pixart, prompt, negative_prompt=negative, rule=GuidanceRule("cfg", scale), steps=steps,
                           seed=seed, width=width, height=height, num_images=count, diagnostics=False)
    theirs = reference(pipe, prompt, negative, scale, steps, seed, width, height, count, output_type)
    assert ours.images.shape == theirs.shape == (count, 3, height, width)
    diff = (ours.images - theirs).abs().max().item()
    print(f"pixart parity {case[:2]} w={scale}: max |Δ| = {diff:.3g}")
    assert diff <= TOLERANCE


def test_the_comparison_fails_for_a_wrong_scale(pixart, pipe):
    """The parity check can fail: w = 3.5 on our side against the pipeline's 4.5 is far beyond one grey level."""
    theirs = reference(pipe, "a red circle", "", 4.5, 8, 3)
    wrong = pixart_to_image(pixart, "a red circle", rule=GuidanceRule("cfg", 3.5), steps=8, seed=3)
    diff = (wrong.images - theirs).abs().max().item()
    print(f"pixart wrong scale: max |Δ| = {diff:.3g}")
    assert diff > 4 * TOLERANCE


def test_prompt_encoding_matches_the_pipeline(pixart, pipe):
    """States and masks of prompt and negative prompt, as ``encode_prompt`` makes them (300 tokens, lower-cased)."""
    ours = encode_t5_prompts(pixart.tokenizer, pixart.text_encoder, ["  A Red CIRCLE ", "blue"])
    cond, cond_mask, uncond, uncond_mask = pipe.encode_prompt("  A Red CIRCLE ", negative_prompt="blue",
                                                              clean_caption=False, device=torch.device("cpu"))
    assert ours.states.shape == (2, MAX_SEQUENCE_LENGTH, pixart.text_encoder.config.d_model)
    assert torch.equal(ours.mask, torch.cat([cond_mask, uncond_mask]))
    assert torch.allclose(ours.states, torch.cat([cond, uncond]), atol=1e-6)
    assert ours.states.dtype == pixart.text_encoder.dtype
    assert ours.mask[1].sum() == 2  # "blue" and </s>; the rest is padding


TWO_BRANCH_RULES = [name for name, method in METHODS.items() if method.uncond_branch != "weak"]


@pytest.mark.parametrize("name", TWO_BRANCH_RULES)
def test_every_two_branch_rule_runs(pixart, name):
    rule = GuidanceRule(name, 0.8 if name == "cfg++" else 4.0)
    scheduler = "ddim" if rule.needs_ddim else OWN
    out = pixart_to_image(pixart, "a red circle", negative_prompt="blue square", rule=rule, steps=4, seed=1,
                          scheduler=scheduler)
    assert out.images.shape == (1, 3, SIZE, SIZE)
    assert torch.isfinite(out.images).all()
    assert out.truncated == [""]


def test_the_rule_list_covers_the_registry():
    assert set(TWO_BRANCH_RULES) >= {"cfg", "perp-cfg", "apg", "cfg-zero-star", "tcfg", "cfg++", "none"}


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_every_named_scheduler_runs(pixart, scheduler):
    """DDPM keeps the learned variance (learned_range); the others take ε alone."""
    out = pixart_to_image(pixart, "a red circle", rule=GuidanceRule("cfg", 4.5), steps=3, seed=2,
                          scheduler=scheduler)
    assert torch.isfinite(out.images).all()


def test_own_scheduler_is_the_repos_dpm_solver(pixart):
    """"own" resolves to the registry's dpm++2m, which builds the same scheduler as the repo's config."""
    a = pixart_to_image(pixart, "a cat", rule=GuidanceRule("cfg", 4.5), steps=5, seed=4)
    b = pixart_to_image(pixart, "a cat", rule=GuidanceRule("cfg", 4.5), steps=5, seed=4, scheduler="dpm++2m")
    assert torch.equal(a.images, b.images)


@pytest.mark.parametrize(("rule", "words"), [
    (GuidanceRule("autoguidance", 2.0), ("autoguidance", "'weak'")),
    (GuidanceRule("cfg", 4.5, pag_scale=3.0), ("PAG", "'perturbed'")),
])
def test_autoguidance_and_pag_are_refused_with_their_reason(pixart, rule, words):
    with pytest.raises(ValueError) as caught:
        pixart_to_image(pixart, "a red circle", rule=rule, steps=3, seed=0)
    assert all(w in str(caught.value) for w in words)


def test_the_denoiser_refuses_other_branches(pixart):
    states = torch.zeros(1, 4, pixart.text_encoder.config.d_model)
    mask = torch.ones(1, 4, dtype=torch.long)
    denoiser = PixArtDenoiser(pixart.transformer, states, mask, states, mask)
    x = torch.zeros(2, 4, 8, 8)
    with pytest.raises(ValueError, match="autoguidance"):
        denoiser(x, torch.tensor(500), ModelCall(("weak", "cond"), 0, 1))
    assert denoiser(x, torch.tensor(500), ModelCall(("uncond", "cond"), 0, 1)).shape == (2, 8, 8, 8)


def test_the_rule_is_checked_before_any_model_work(pixart, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the prompt was encoded before the rule was checked")

    monkeypatch.setattr("pipelines.pixart.encode_t5_prompts", fail)
    with pytest.raises(ValueError, match="ddim"):
        pixart_to_image(pixart, "a red circle", rule=GuidanceRule("cfg++", 0.8), steps=3)  # own is DPM-Solver++
    with pytest.raises(ValueError, match="multiple of 16"):
        pixart_to_image(pixart, "a red circle", rule=GuidanceRule("cfg", 4.5), steps=3, width=72)
    with pytest.raises(ValueError, match="scheduler"):
        pixart_to_image(pixart, "a red circle", rule=GuidanceRule("cfg", 4.5), steps=3, scheduler="heun")


def test_a_long_prompt_is_truncated_and_reported(pixart, pipe):
    """300 tokens with </s>: of 400 words, 299 are kept and 101 reported; the states are those of the kept words."""
    long_prompt = "red " * 400
    out = pixart_to_image(pixart, long_prompt, rule=GuidanceRule("cfg", 4.5), steps=3, seed=0)
    assert out.truncated[0].split() == ["red"] * 101
    kept = encode_t5_prompts(pixart.tokenizer, pixart.text_encoder, [long_prompt, "red " * 299])
    assert torch.equal(kept.states[0], kept.states[1]) and kept.truncated == [" ".join(["red"] * 101), ""]
    theirs = reference(pipe, long_prompt, "", 4.5, 3, 0)
    assert (out.images - theirs).abs().max().item() <= TOLERANCE


def test_default_size_is_the_transformers_native_one(pixart):
    out = pixart_to_image(pixart, "a dog", rule=GuidanceRule("none", 1.0), steps=2, seed=0)
    assert out.images.shape == (1, 3, pixart.image_size, pixart.image_size) == (1, 3, SIZE, SIZE)


def test_missing_models_name_the_role(tmp_path, folders):
    with pytest.raises(ModelUnavailable, match="'pixart'.*transformer"):
        load_pixart(str(tmp_path / "nowhere"), str(folders[1]), pick_runtime("cpu", "float32"))


def test_the_released_tokenizer_layout_reads_like_the_fast_one(tmp_path, folders, pixart):
    """The real tokenizer/ has spiece.model only (read through sentencepiece, a requirement): it loads and draws the
    same image as the folder with tokenizer.json."""
    base = build_tiny_pixart_base(tmp_path / "base", seed=1, fast_tokenizer_file=False)  # the fixture's seed
    assert not (base / "tokenizer" / "tokenizer.json").exists()
    released = load_pixart(str(folders[0]), str(base), pick_runtime("cpu", "float32"))
    a = pixart_to_image(released, "a red circle on the left", rule=GuidanceRule("cfg", 4.5), steps=3, seed=1)
    b = pixart_to_image(pixart, "a red circle on the left", rule=GuidanceRule("cfg", 4.5), steps=3, seed=1)
    assert torch.equal(a.images, b.images)


def test_half_precision_runtime_keeps_t5_in_float32_on_the_cpu(folders, pixart):
    """The CUDA path's dtypes run on the CPU: transformer and VAE in float16, T5 in float32 (float16 on CUDA only);
    the image stays within a grey level of the float32 run."""
    half = load_pixart(str(folders[0]), str(folders[1]), pick_runtime("cpu", "float16"))
    assert (half.dtype, half.vae.dtype, half.text_encoder.dtype) == (torch.float16, torch.float16, torch.float32)
    assert text_encoder_dtype(Runtime(torch.device("cuda"), torch.float16)) == torch.float16
    a = pixart_to_image(half, "a red circle", rule=GuidanceRule("cfg", 4.5), steps=4, seed=3)
    b = pixart_to_image(pixart, "a red circle", rule=GuidanceRule("cfg", 4.5), steps=4, seed=3)
    assert a.images.dtype == torch.float32 and (a.images - b.images).abs().max().item() <= TOLERANCE
