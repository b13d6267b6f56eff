"""Rectified flow (SD3 / SD3.5) through the one sampler loop, against diffusers' ``StableDiffusion3Pipeline`` on tiny
random models saved in ``stabilityai/stable-diffusion-3.5-medium``'s real layout (``testing/tiny_sd3.py``), and the
toy model's layout (no CLIP-G, no VAE) against ``scripts/train/toy_flow.py``'s own text encoding."""

from __future__ import annotations

import dataclasses
import json

import httpx
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline
from huggingface_hub.errors import GatedRepoError

from condition.flow_text import encode_flow_prompts
from guidance.rules import GuidanceRule
from models.loading.flow import FlowComponents, load_flow
from models.loading.sd import ModelUnavailable
from models.runtime import pick_runtime
from pipelines.flow import check_flow_rule, flow_to_image
from testing.tiny_sd3 import SD35_FILES, SD35_MODEL_INDEX, build_tiny_sd3, build_toy_like_flow

CPU = pick_runtime("cpu", "float32")
PIXEL = 1 / 255  # one 8-bit level: what "the same image" means


@pytest.fixture(scope="module")
def sd3_folder(tmp_path_factory):
    return build_tiny_sd3(tmp_path_factory.mktemp("sd35") / "stable-diffusion-3.5-medium")


@pytest.fixture(scope="module")
def sd3(sd3_folder) -> FlowComponents:
    return load_flow(str(sd3_folder), CPU)


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> FlowComponents:
    return load_flow(str(build_toy_like_flow(tmp_path_factory.mktemp("toy") / "flow")), CPU)


@pytest.fixture(scope="module")
def pipe(sd3) -> StableDiffusion3Pipeline:
    """diffusers' pipeline on the very modules ``load_flow`` loaded, with a scheduler from the folder's config."""
    pipe = StableDiffusion3Pipeline(
        transformer=sd3.transformer, scheduler=FlowMatchEulerDiscreteScheduler.from_config(sd3.scheduler_config),
        vae=sd3.vae, text_encoder=sd3.text_encoder, tokenizer=sd3.tokenizer, text_encoder_2=sd3.text_encoder_2,
        tokenizer_2=sd3.tokenizer_2, text_encoder_3=sd3.text_encoder_3, tokenizer_3=sd3.tokenizer_3)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def reference(pipe: StableDiffusion3Pipeline, prompt: str, negative: str, scale: float, steps: int, seed: int,
              height: int, width: int, num_images: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The pipeline's images ``[B, 3, H, W]`` in [0, 1] and its final latents (read by the step callback)."""
    final: dict[str, torch.Tensor] = {}

    def keep(_pipe, _index, _t, tensors):
        final["latents"] = tensors["latents"].clone()
        return {}

    images = pipe(prompt, negative_prompt=negative, guidance_scale=scale, num_inference_steps=steps, height=height,
                  width=width, num_images_per_prompt=num_images, generator=torch.Generator().manual_seed(seed),
                  output_type="pt", callback_on_step_end=keep).images
    return images.float().cpu(), final["latents"]


def ours(flow: FlowComponents, prompt: str, negative: str, scale: float, steps: int, seed: int, height: int,
         width: int, num_images: int = 1):
    return flow_to_image(flow, prompt, negative_prompt=negative, rule=GuidanceRule("cfg", scale), steps=steps,
                         seed=seed, height=height, width=width, num_images=num_images, diagnostics=False)


CASES = [  # prompt, negative prompt, w, steps, seed, height, width, images
    ("a red circle on the left", "", 4.5, 4, 3, 64, 96, 1),
    ("a photo of a blue square", "a green cat", 7.0, 3, 0, 64, 64, 2),
]


@pytest.mark.parametrize("case", CASES, ids=["sd35-cfg4.5", "negative-prompt-2-images"])
def test_our_loop_matches_the_sd3_pipeline(sd3, pipe, case):
    prompt, negative, scale, steps, seed, height, width, num_images = case
    expected, latents = reference(pipe, prompt, negative, scale, steps, seed, height, width, num_images)
    out = ours(sd3, prompt, negative, scale, steps, seed, height, width, num_images)
    assert out.images.shape == expected.shape == (num_images, 3, height, width)
    assert (out.images - expected).abs().max().item() <= PIXEL
    torch.testing.assert_close(out.result.sample, latents, rtol=1e-5, atol=1e-5)


def test_the_comparison_fails_for_a_wrong_scale_or_a_wrong_shift(sd3, pipe):
    """The parity above is not vacuous: one guidance unit more, or SD3's shift of 3 replaced by 1, is caught."""
    prompt, negative, scale, steps, seed, height, width, _ = CASES[0]
    expected, latents = reference(pipe, prompt, negative, scale, steps, seed, height, width)
    wrong_scale = ours(sd3, prompt, negative, scale + 1, steps, seed, height, width)
    unshifted = dataclasses.replace(sd3, scheduler_config={**sd3.scheduler_config, "shift": 1.0})
    wrong_shift = ours(unshifted, prompt, negative, scale, steps, seed, height, width)
    for wrong in (wrong_scale, wrong_shift):
        assert (wrong.images - expected).abs().max().item() > 5 * PIXEL
        assert (wrong.result.sample - latents).abs().max().item() > 1e-2


def test_the_tiny_folder_has_the_real_layout_and_loads_as_diffusers_loads_it(sd3_folder, sd3):
    files = {str(p.relative_to(sd3_folder)) for p in sd3_folder.rglob("*") if p.is_file()}
    assert set(SD35_FILES) <= files
    assert json.loads((sd3_folder / "model_index.json").read_text()) == SD35_MODEL_INDEX
    assert sd3.scheduler_config["shift"] == 3.0 and sd3.vae_scale_factor == 8 and sd3.native_size == 64
    theirs = StableDiffusion3Pipeline.from_pretrained(sd3_folder, torch_dtype=torch.float32)
    for name in ("transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "vae"):
        mine, reference_state = getattr(sd3, name).state_dict(), getattr(theirs, name).state_dict()
        assert mine.keys() == reference_state.keys()
        assert all(torch.equal(mine[k], reference_state[k]) for k in mine), name
    half = load_flow(str(sd3_folder), pick_runtime("cpu", "float16"))  # fp16 variants, plain files where none
    assert {half.transformer.dtype, half.text_encoder_3.dtype, half.vae.dtype} == {torch.float16}


def test_the_toy_layout_samples_and_encodes_as_the_toy_trainer_does(toy):
    from scripts.train.toy_flow import encode

    assert toy.text_encoder_2 is None and toy.vae is None and toy.pixel_space
    captions = ["a red circle on the left", "", "a blue square on the right and a green circle on the left of the "
                "cat dog photo of the red blue"]
    tokens, pooled = encode(captions, toy.tokenizer, toy.text_encoder, toy.tokenizer_3, toy.text_encoder_3)
    text = encode_flow_prompts(captions, tokenizer=toy.tokenizer, text_encoder=toy.text_encoder,
                               tokenizer_3=toy.tokenizer_3, text_encoder_3=toy.text_encoder_3)
    assert text.tokens.shape == (3, 24 + 24, 32)
    assert torch.equal(text.tokens, tokens) and torch.equal(text.pooled, pooled)
    # The long caption overflows both 24-token windows; what T5 (the longer reader here) cut is what no one read.
    assert text.dropped["clip"][2].endswith(text.truncated[2]) and text.truncated[2] and text.truncated[:2] == ["", ""]
    out = flow_to_image(toy, "a red circle", rule=GuidanceRule("cfg", 4.0), steps=3, seed=0)
    assert out.images.shape == (1, 3, 16, 16) and out.truncated == [""]


@pytest.mark.parametrize("rule", [
    GuidanceRule("cfg-zero-star", 4.0), GuidanceRule("apg", 4.0, apg_momentum=-0.5),
    GuidanceRule("cfg", 4.0, interval_start=0.25, interval_end=0.75), GuidanceRule("cfg", 4.0, rescale=0.7),
], ids=["cfg-zero-star", "apg", "interval", "rescale"])
def test_velocity_methods_run_on_the_flow_model(toy, rule):
    out = flow_to_image(toy, "a blue square", rule=rule, steps=4, seed=1, num_images=2)
    assert out.images.shape == (2, 3, 16, 16) and torch.isfinite(out.images).all()
    assert 0 <= out.images.min() and out.images.max() <= 1


def test_methods_without_a_flow_form_or_a_branch_are_refused(toy):
    with pytest.raises(ValueError, match="cfg\\+\\+ has no flow form here: its update rewrites a deterministic DDIM"):
        check_flow_rule(GuidanceRule("cfg++", 0.8))
    with pytest.raises(ValueError, match="no flow form"):
        flow_to_image(toy, "a red circle", rule=GuidanceRule("cfg++", 0.8), steps=2)
    with pytest.raises(ValueError, match="'perturbed' is needed by PAG"):
        flow_to_image(toy, "a red circle", rule=GuidanceRule("cfg", 4.0, pag_scale=3.0), steps=2)
    with pytest.raises(ValueError, match="'weak' is needed by autoguidance"):
        flow_to_image(toy, "a red circle", rule=GuidanceRule("autoguidance", 2.0), steps=2)
    with pytest.raises(ValueError, match="multiple of 2"):
        flow_to_image(toy, "a red circle", rule=GuidanceRule("cfg", 4.0), steps=2, width=15)


def test_a_gated_repo_without_a_token_says_so_plainly(monkeypatch):
    """The hub's answer for a gated repo, simulated where diffusers asks for ``model_index.json``: no network."""
    import diffusers.configuration_utils

    repo = "someone/flow-model"

    def gated_download(repo_id, filename, **_):
        url = f"https://huggingface.co/{repo_id}/resolve/main/{filename}"
        raise GatedRepoError(f"401 Client Error. Cannot access gated repo for url {url}.",
                             response=httpx.Response(401, request=httpx.Request("GET", url)))

    monkeypatch.setattr(diffusers.configuration_utils, "hf_hub_download", gated_download)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(ModelUnavailable) as refused:
        load_flow(repo, CPU)
    message = str(refused.value)
    assert "'flow' model 'someone/flow-model' is a gated repository" in message
    assert "no access token was given" in message and f"https://huggingface.co/{repo}" in message
    assert "set it as HF_TOKEN" in message and "licence" in message
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    with pytest.raises(ModelUnavailable, match="the access token given \\(HF_TOKEN\\) has no access"):
        load_flow(repo, CPU)


def test_a_folder_without_the_model_names_the_flow_role(tmp_path):
    with pytest.raises(ModelUnavailable, match="The 'flow' model could not be loaded"):
        load_flow(str(tmp_path), CPU)


def test_a_size_beyond_the_positional_embedding_is_refused_before_sampling(toy):
    """The toy layout's embedding covers 8 patches of 2 px: 16 px draws, 32 px is refused in our words (diffusers'
    own error would name latent patches and the embedding's size)."""
    assert toy.max_size == 16
    assert flow_to_image(toy, "a red circle", rule=GuidanceRule("cfg", 2.0), steps=1, seed=0, width=16,
                         height=16).images.shape[-1] == 16
    with pytest.raises(ValueError, match=r"at most 16×16 px .* got 32×16"):
        flow_to_image(toy, "a red circle", rule=GuidanceRule("cfg", 2.0), steps=1, seed=0, width=32, height=16)
