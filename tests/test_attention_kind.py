"""/text_to_image's ``attention`` option on the toy profile: materialised and fused (SDPA) attention give the same
pixels, the request's processors are restored afterwards (errors included), and the metadata says which kind ran
and what it cost. Task functions are called directly: a live server would prove nothing extra here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

from condition.text import encode_prompts
from guidance.settings import SamplingSettings
from models.adapters.pag import PerturbedSelfAttention
from models.loading.sd import load_role_sd
from models.profiles import load_profile
from models.runtime import pick_runtime
from pipelines.attention import RecordingProcessor, computing_attention, cross_attention_layers
from tasks.spec import RunTimeout
from tasks.text_to_image import ROLE, TEXT_TO_IMAGE

CPU32 = pick_runtime("cpu", "float32")
EPS_TOLERANCE = 1e-5  # one UNet call: the two kinds differ by summation order only (measured ≤ 1.2e-6)
PIXEL_TOLERANCE = 1  # 8-bit levels: a float difference of ~1e-5 can tip one rounding (measured 0 at 32², 1 at 128²)


@pytest.fixture(scope="module")
def toy():
    return load_profile("toy")


@pytest.fixture(scope="module")
def unet(toy):
    """The toy UNet the task itself uses (the process-wide model cache hands both the same object)."""
    return load_role_sd(toy, CPU32, ROLE).unet


def pixels(result) -> np.ndarray:
    return np.stack([np.asarray(image, dtype=np.int16) for image, _caption in result.outputs["images"]])


def eps(sd, unet, x: torch.Tensor, t: int) -> torch.Tensor:
    text = encode_prompts(sd.tokenizer, sd.text_encoder, ["a red circle", ""], sd.device).states
    with torch.no_grad():
        return unet(x, t, encoder_hidden_states=text).sample


def test_one_unet_call_gives_the_same_eps_and_the_comparison_can_fail(toy, unet):
    sd = load_role_sd(toy, CPU32, ROLE)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = {}
    for kind in ("sdpa", "materialised"):
        with computing_attention(unet, kind):
            out[kind] = eps(sd, unet, x, 500)
    assert (out["sdpa"] - out["materialised"]).abs().max().item() <= EPS_TOLERANCE

    class MisScaled(AttnProcessor):
        """Materialised attention with its logits 0.1 % too large: a bug the tolerance must see."""

        def __call__(self, attn, *args, **kwargs):
            scale = attn.scale
            attn.scale = scale * 1.001
            try:
                return super().__call__(attn, *args, **kwargs)
            finally:
                attn.scale = scale

    original = dict(unet.attn_processors)
    unet.set_attn_processor(MisScaled())
    try:
        wrong = eps(sd, unet, x, 500)
    finally:
        unet.set_attn_processor(original)
    assert (out["sdpa"] - wrong).abs().max().item() > EPS_TOLERANCE


def test_both_kinds_draw_the_same_pixels_through_the_task(toy):
    request = dict(prompt="a red circle", steps=4, width=32, height=32, seed=3, num_images=2)
    sdpa = TEXT_TO_IMAGE(toy, attention="sdpa", **request)
    materialised = TEXT_TO_IMAGE(toy, attention="materialised", **request)
    assert np.abs(pixels(sdpa) - pixels(materialised)).max() <= PIXEL_TOLERANCE
    assert pixels(sdpa).std() > 10  # an image, not a blank
    other_seed = TEXT_TO_IMAGE(toy, attention="materialised", **{**request, "seed": 4})
    assert np.abs(pixels(other_seed) - pixels(materialised)).max() > PIXEL_TOLERANCE  # the check can fail
    unmeasured = sdpa.outputs["metadata"]["attention"]
    assert unmeasured["kind"] == "sdpa" and "not measured" in unmeasured["peak_memory"] and unmeasured["seconds"] > 0
    assert "token_map" not in unmeasured


def test_the_chosen_kind_is_what_the_recorder_and_pag_wrap_and_all_is_restored(toy, unet):
    before = dict(unet.attn_processors)
    assert {type(p) for p in before.values()} == {AttnProcessor2_0}
    cross = set(cross_attention_layers(unet))
    seen: list[dict[str, str]] = []

    def describe(processor) -> str:
        if isinstance(processor, RecordingProcessor | PerturbedSelfAttention):
            inner = processor.inner if isinstance(processor, RecordingProcessor) else processor.original
            return f"{type(processor).__name__}({type(inner).__name__})"
        return type(processor).__name__

    def during_run(done: int, total: int, desc: str) -> None:
        if desc.startswith("denoising"):
            seen.append({name: describe(p) for name, p in unet.attn_processors.items()})

    # PAG's layers are installed around each model call (the recorder and the kind around the run): look from
    # inside the UNet's calls.
    hook = unet.register_forward_pre_hook(lambda *_: during_run(0, 0, "denoising"))
    try:
        TEXT_TO_IMAGE(toy, prompt="a red circle", steps=2, width=32, height=32, attention="materialised",
                      attention_token="red", pag_scale=1.0, pag_layers="mid")
    finally:
        hook.remove()
    assert len(seen) == 2
    for name, kind in seen[0].items():
        if name in cross:
            assert kind == "RecordingProcessor(AttnProcessor)", name
        elif name.startswith("mid_block"):
            assert kind == "PerturbedSelfAttention(AttnProcessor)", name
        else:
            assert kind == "AttnProcessor", name
    assert dict(unet.attn_processors) == before  # the very same processor objects

    # A request that fails once its processors are installed (the time limit at the first step) restores them too.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONDLAB_TIMEOUT_S", "0")
        with pytest.raises(RunTimeout):
            TEXT_TO_IMAGE(toy, during_run, prompt="a red circle", steps=2, width=32, height=32,
                          attention="materialised", attention_token="red")
    assert seen[-1] != seen[0] and "RecordingProcessor(AttnProcessor)" in seen[-1].values()
    assert dict(unet.attn_processors) == before


def test_a_processor_of_another_kind_is_refused_and_left_alone(unet):
    before = dict(unet.attn_processors)
    name = next(iter(before))
    unet.set_attn_processor({**before, name: RecordingProcessor(before[name], store=None)})
    try:
        with pytest.raises(ValueError, match="RecordingProcessor"), computing_attention(unet, "materialised"):
            pass
        assert isinstance(unet.attn_processors[name], RecordingProcessor)
    finally:
        unet.set_attn_processor(before)
    with pytest.raises(ValueError, match="attention must be one of"), computing_attention(unet, "flash"):
        pass


def test_metadata_names_the_kind_and_materialised_peaks_higher(toy):
    """At 128² the toy's attention runs on a 32 × 32 map (N = 1024 tokens, 4 heads): one self-attention layer's
    score and probability matrices for the CFG batch of two take 2 × 2 × 4 × 1024² × 4 B = 64 MiB when
    materialised; SDPA never forms them."""
    request = dict(prompt="a red circle", steps=1, width=128, height=128, seed=0, measure_memory=True)
    meta = {kind: TEXT_TO_IMAGE(toy, attention=kind, **request).outputs["metadata"]["attention"]
            for kind in ("sdpa", "materialised")}
    assert meta["sdpa"]["kind"] == "sdpa" and meta["sdpa"]["processor"] == "AttnProcessor2_0"
    assert meta["materialised"]["kind"] == "materialised" and meta["materialised"]["processor"] == "AttnProcessor"
    matrices = 2 * 2 * 4 * 1024**2 * 4
    sdpa, materialised = meta["sdpa"]["peak_memory_bytes"], meta["materialised"]["peak_memory_bytes"]
    assert materialised >= matrices > sdpa, (materialised, sdpa)
    assert materialised > 1.25 * sdpa
    assert meta["sdpa"]["seconds"] > 0 and "profiler" in meta["sdpa"]["peak_memory_method"]


def test_the_token_map_keeps_the_conditional_rows_under_pag_and_a_row_budget(toy):
    """PAG stacks its perturbed rows after the conditional ones, and a row budget splits a UNet call: the map must
    still average the conditional rows of each image. At the first step PAG leaves those rows as they were."""
    from guidance.rules import GuidanceRule
    from models.adapters.denoisers import UNetDenoiser
    from models.runtime import rows_at_most
    from pipelines.attention import AttentionStore, recording
    from pipelines.text_to_image import generate, latent_shape, prompt_contexts, text_to_image

    sd = load_role_sd(toy, CPU32, ROLE)
    request = dict(steps=1, width=32, height=32, num_images=3, attention=True)
    plain = text_to_image(sd, "a red circle", rule=GuidanceRule("cfg", 7.0), **request).attention
    with rows_at_most(4):  # 6 rows: [u0 u1 u2 c0] [c1 c2]
        chunked = text_to_image(sd, "a red circle", rule=GuidanceRule("cfg", 7.0), **request).attention
    pag_rule = GuidanceRule("cfg", 7.0, pag_scale=2.0, pag_layers="mid")
    pag = text_to_image(sd, "a red circle", rule=pag_rule, **request).attention
    assert (plain - chunked).abs().max().item() <= 1e-5
    assert (plain - pag).abs().max().item() <= 1e-5
    # Not vacuous: the last rows of a PAG call (what an unmarked store keeps) are the perturbed ones, another map.
    cond, uncond, _ = prompt_contexts(sd, "a red circle", "", 3)
    shape = latent_shape(sd, 32, 32, 3)
    store = AttentionStore(3, shape[2], shape[3])
    with recording(sd.unet, store):
        generate(sd, UNetDenoiser(sd.unet, cond, uncond), pag_rule, shape, SamplingSettings(steps=1))
    assert (plain - store.maps()).abs().max().item() > 1e-3
