"""The ``model`` parameter on the toy profile: every text-to-image role draws through the same endpoints, and what a
model kind cannot do is refused before any model work with the reason."""

from __future__ import annotations

import numpy as np
import pytest

from condition.text import prompt_tokens, token_offset
from models.loading.sd import load_role_sd
from models.profiles import load_profile
from models.runtime import pick_runtime
from tasks.attention_binding import ATTENTION_BINDING
from tasks.text_to_image import GUIDANCE_SWEEP, TEXT_TO_IMAGE

QUICK = dict(prompt="a red circle on the left and a blue square", steps=3, seed=2)


@pytest.fixture(scope="module")
def toy():
    return load_profile("toy")


def pixels(result) -> np.ndarray:
    return np.stack([np.asarray(image) for image, _ in result.outputs["images"]]).astype(np.int16)


@pytest.mark.parametrize("model", ["sd", "sd_t5", "flow"])
def test_every_toy_model_draws_through_text_to_image(toy, model):
    result = TEXT_TO_IMAGE(toy, model=model, **QUICK)
    assert pixels(result).shape == (1, 32, 32, 3) and pixels(result).std() > 5
    meta = result.outputs["metadata"]
    assert meta["model"] == model and meta["parameters"]["model"] == model
    assert set(result.outputs["diagnostics"]["series"]) == {"‖Δ∥‖ (along the basis)", "‖Δ⊥‖ (across)"}


def test_the_models_are_different_models(toy):
    a, b, c = (pixels(TEXT_TO_IMAGE(toy, model=m, **QUICK)) for m in ("sd", "sd_t5", "flow"))
    assert np.abs(a - b).max() > 20 and np.abs(a - c).max() > 20 and np.abs(b - c).max() > 20


def test_t5_has_no_start_token_and_its_maps_find_the_word(toy):
    runtime = pick_runtime("cpu", "float32")
    clip, t5 = (load_role_sd(toy, runtime, role).tokenizer for role in ("sd", "sd_t5"))
    assert (token_offset(clip), token_offset(t5)) == (1, 0)
    words = prompt_tokens(t5, "a red circle")
    assert words == ["a", "red", "circle"]  # SentencePiece's ▁ is not part of the word
    result = TEXT_TO_IMAGE(toy, model="sd_t5", attention_token="red", **QUICK)
    assert len(result.outputs["attention"]) == 1
    binding = ATTENTION_BINDING(toy, model="sd_t5", prompt=QUICK["prompt"], steps=3, num_images=1)
    assert "red" in binding.outputs["table"] and "square" in binding.outputs["table"]


@pytest.mark.parametrize("request_,message", [
    (dict(model="flow", pag_scale=3.0), "PAG perturbs a UNet's self-attention"),
    (dict(model="flow", attention_token="red"), "cross-attention maps are recorded on UNet models"),
    (dict(model="flow", ddim_eta=0.5), "flow-matching Euler"),
    (dict(model="flow", guidance="cfg++", scale=0.8), "no flow form"),
    (dict(model="flow", threshold=0.995), "dynamic thresholding"),
    (dict(model="sd_t5", guidance="autoguidance"), "weaker twin of the sd model"),
    (dict(model="flow", attention="materialised"), "leave attention at sdpa"),
    (dict(model="pixart"), "names no 'pixart' model"),
    (dict(model="dalle"), "model must be one of sd, sd_t5, flow"),
])
def test_what_a_model_cannot_do_is_refused_up_front(toy, request_, message):
    endpoint = TEXT_TO_IMAGE.spec.bind(toy)
    with pytest.raises(ValueError, match=message):
        endpoint.parse({**QUICK, **request_})


def test_binding_refuses_a_model_without_cross_attention_maps(toy):
    with pytest.raises(ValueError, match="binding is measured on cross-attention maps"):
        ATTENTION_BINDING.spec.bind(toy).parse({"model": "flow"})


def test_a_sweep_runs_on_the_flow_model(toy):
    result = GUIDANCE_SWEEP(toy, model="flow", methods="cfg, apg, cfg-zero-star", scales="1, 4", steps=3, seed=1)
    assert result.outputs["metadata"]["model"] == "flow" and result.outputs["metadata"]["batched_rows"] == 6


def test_compare_with_cfg_draws_plain_cfg_at_the_same_seed_with_both_costs(toy):
    result = TEXT_TO_IMAGE(toy, guidance="apg", scale=6.0, pag_scale=0.0, compare_with="cfg", **QUICK)
    method, plain = result.outputs["compare"]
    assert np.array_equal(np.asarray(method), np.asarray(result.outputs["images"][0][0]))
    alone = TEXT_TO_IMAGE(toy, guidance="cfg", scale=6.0, **QUICK)
    assert np.array_equal(np.asarray(plain), np.asarray(alone.outputs["images"][0][0]))  # plain CFG, same seed
    assert np.abs(np.asarray(plain, dtype=int) - np.asarray(method, dtype=int)).max() > 0  # another method
    cost = result.outputs["metadata"]["compare"]
    assert cost["method"]["rule"] == "apg" and cost["cfg"]["model_rows_per_step"] == 2.0
    assert cost["method"]["seconds"] > 0 and cost["cfg"]["seconds"] > 0
