"""``/attention_cost``: the walked layer list against a count made from the config alone, the lecture's numbers,
the measured growth of materialised attention, SDPA against materialised outputs, and bad resolution lists.

Each comparison is also shown failing once on a deliberately wrong input, so a pass means something.
"""

from __future__ import annotations

import json

import pytest
import torch

from experiments import attention_cost as ac
from experiments import attention_timing as timing
from models.loading.sd import load_sd
from models.profiles import ROOT, load_profile
from models.runtime import pick_runtime
from tasks.attention_cost import ATTENTION_COST

TOY_UNET_CONFIG = json.loads((ROOT / "assets" / "toy" / "sd" / "unet" / "config.json").read_text())
TOY_TEXT_TOKENS = 24  # the toy tokenizer's model_max_length
CPU32 = pick_runtime("cpu", "float32")

# Growth tolerances, as a fraction of the expected ratio (compared in log space). The measured peak also holds the
# projected queries, keys, values and output (∝ N), and the CPU replay counts at op granularity, so self-attention
# (matrix ∝ N², the rest ∝ N) lands a little under 16× at the toy's sizes; cross-attention is ∝ N throughout.
SELF_GROWTH, SELF_TOLERANCE = 16.0, 0.20
CROSS_GROWTH, CROSS_TOLERANCE = 4.0, 0.15
AGREEMENT = 1e-5


def independent_count(config: dict, resolution: int, vae_scale: int, text_tokens: int) -> list[tuple]:
    """(kind, N, M, heads, head dim) per attention layer in call order, from the config's numbers alone: each
    CrossAttn down block holds layers_per_block transformers, the mid block one, each CrossAttn up block
    layers_per_block + 1; every transformer calls self- then cross-attention. diffusers reads
    ``num_attention_heads`` (or, by an old naming slip, ``attention_head_dim``) as the number of heads."""
    channels = list(config["block_out_channels"])
    levels = len(channels)
    heads_cfg = config.get("num_attention_heads") or config["attention_head_dim"]
    heads = list(heads_cfg) if isinstance(heads_cfg, list | tuple) else [heads_cfg] * levels
    side = resolution // vae_scale
    per_layer = config.get("layers_per_block", 2)

    def transformer(level: int, width: int, n_heads: int) -> list[tuple]:
        n = (side // 2**level) ** 2
        return [("self", n, n, n_heads, width // n_heads), ("cross", n, text_tokens, n_heads, width // n_heads)]

    rows: list[tuple] = []
    for level, block in enumerate(config["down_block_types"]):
        if block.startswith("CrossAttn"):
            rows += transformer(level, channels[level], heads[level]) * per_layer
    if config.get("mid_block_type", "UNetMidBlock2DCrossAttn") == "UNetMidBlock2DCrossAttn":
        rows += transformer(levels - 1, channels[-1], heads[-1])
    for index, block in enumerate(config["up_block_types"]):
        level = levels - 1 - index
        if block.startswith("CrossAttn"):
            rows += transformer(level, channels[level], heads[level]) * (per_layer + 1)
    return rows


def walked(layers: list) -> list[tuple]:
    return [(x["kind"], x["query_tokens"], x["key_tokens"], x["heads"], x["head_dim"]) if isinstance(x, dict)
            else (x.kind, x.query_tokens, x.key_tokens, x.heads, x.head_dim) for x in layers]


@pytest.fixture(scope="module")
def tiny_sd_profile(tiny_sd_folder, tmp_path_factory):
    path = tmp_path_factory.mktemp("attention_cost") / "tiny.toml"
    path.write_text(f'sd = "{tiny_sd_folder}"\n[limits]\nmax_pixels = 16384\n')
    return load_profile(str(path))


def test_toy_profile_rows_equal_an_independent_count():
    """Through the endpoint (no measurement): every row at every asked size, plus the slopes 2 and 1."""
    toy = load_profile("toy")
    result = ATTENTION_COST(toy, resolutions="32, 64, 128", measure=False)
    meta = result.outputs["metadata"]
    for resolution in (32, 64, 128):
        rows = [x for x in meta["layers"] if x["resolution"] == resolution]
        assert walked(rows) == independent_count(TOY_UNET_CONFIG, resolution, 1, TOY_TEXT_TOKENS), resolution
    unet = load_sd(toy.source("sd"), pick_runtime()).unet
    assert len([x for x in meta["layers"] if x["resolution"] == 32]) == len(unet.attn_processors)
    assert meta["slopes"]["self"] == pytest.approx(2.0) and meta["slopes"]["cross"] == pytest.approx(1.0)
    row = meta["layers"][0]
    assert row["matrix_bytes_fp32"] == row["heads"] * row["query_tokens"] * row["key_tokens"] * 4
    assert row["qk_flops"] == row["av_flops"] == 2 * row["heads"] * row["query_tokens"] * row["key_tokens"] * 24
    assert meta["totals"]["128"]["self"]["flops_per_step"] == 2 * meta["totals"]["128"]["self"]["flops_per_image"]
    assert result.outputs["plot"].size[0] > 100 and "| 128 | self |" in result.outputs["table"]


def test_tiny_sd_rows_equal_an_independent_count(tiny_sd_profile, tiny_sd_folder):
    """The tiny SD is a latent model (VAE factor 2, UNet factor 2): sides must be multiples of 4."""
    result = ATTENTION_COST(tiny_sd_profile, resolutions="32, 64", measure=False)
    meta = result.outputs["metadata"]
    config = json.loads((tiny_sd_folder / "unet" / "config.json").read_text())
    sd = load_sd(str(tiny_sd_folder), pick_runtime())
    assert meta["model_factor"] == 4 and meta["text_tokens"] == sd.tokenizer.model_max_length
    for resolution in (32, 64):
        rows = [x for x in meta["layers"] if x["resolution"] == resolution]
        assert walked(rows) == independent_count(config, resolution, 2, meta["text_tokens"])
        assert len(rows) == len(sd.unet.attn_processors)


def test_sd15_layers_from_its_published_config():
    """SD 1.5 at 512²: 32 attention layers; the finest level is 64×64 = 4096 tokens, 8 heads of 40."""
    layers = ac.attention_layers(ac.SD15_UNET_CONFIG, 512, ac.SD15_VAE_SCALE, ac.SD15_TEXT_TOKENS)
    assert walked(layers) == independent_count(ac.SD15_UNET_CONFIG, 512, 8, 77)
    assert len(layers) == 32 and (layers[0].query_tokens, layers[0].heads, layers[0].head_dim) == (4096, 8, 40)
    assert layers[0].matrix_bytes("fp32") == 512 * 2**20


def test_the_independent_count_can_fail():
    """Counted with the wrong head number (the config's head *dimension* 4 read as 8 heads), it disagrees."""
    layers = ac.attention_layers(TOY_UNET_CONFIG, 64, 1, TOY_TEXT_TOKENS)
    wrong = {**TOY_UNET_CONFIG, "attention_head_dim": 8}
    assert walked(layers) != independent_count(wrong, 64, 1, TOY_TEXT_TOKENS)
    assert walked(layers) != independent_count(TOY_UNET_CONFIG, 64, 1, 77)  # the wrong text length too


def test_the_lectures_numbers():
    """fp32 (4 bytes), one head, one batch element, a 77-token text; cross in decimal MB, self in binary units."""
    small, large = ac.lecture_numbers()
    assert (small["query_tokens"], small["cross_bytes"], small["self_bytes"]) == (4096, 1_261_568, 67_108_864)
    assert round(small["cross_mb"], 2) == 1.26 and small["self_mib"] == 64
    assert (large["query_tokens"], large["cross_bytes"], large["self_bytes"]) == (65536, 20_185_088, 17_179_869_184)
    assert round(large["cross_mb"]) == 20 and large["self_gib"] == 16
    # The same arithmetic with other assumptions does not give the lecture's numbers: fp16, or SD's 8 heads.
    assert ac.lecture_numbers(bytes_per_element=2)[0]["self_mib"] == 32
    assert ac.lecture_numbers(heads=8)[0]["cross_mb"] != pytest.approx(1.26, abs=0.01)


def test_measured_materialised_memory_grows_16x_for_self_and_4x_for_cross():
    """Toy UNet, side 64 → 128 px (N 256 → 1024), fp32 on the CPU, tolerances above."""
    layers = [x for r in (64, 128) for x in ac.attention_layers(TOY_UNET_CONFIG, r, 1, TOY_TEXT_TOKENS)]
    measurements = timing.measure_kinds(layers, CPU32, repeats=1)
    assert all(m.measured for m in measurements)
    (self_ratio,), (cross_ratio,) = timing.growth(measurements, "self"), timing.growth(measurements, "cross")
    assert ac.is_close_ratio(self_ratio, SELF_GROWTH, SELF_TOLERANCE), self_ratio
    assert ac.is_close_ratio(cross_ratio, CROSS_GROWTH, CROSS_TOLERANCE), cross_ratio
    # The check fails when the expectations are swapped (cross-attention is not quadratic).
    assert not ac.is_close_ratio(cross_ratio, SELF_GROWTH, SELF_TOLERANCE)
    assert not ac.is_close_ratio(self_ratio, CROSS_GROWTH, CROSS_TOLERANCE)
    # Fused attention never holds the N × N matrix: far below the materialised peak at 128 px.
    peaks = {(m.resolution, m.kind, m.processor): m.peak_bytes for m in measurements}
    assert peaks[(128, "self", "sdpa")] < peaks[(128, "self", "materialised")] / 4


def test_a_measurement_that_would_not_fit_is_not_attempted():
    layer = ac.attention_layers(ac.SD15_UNET_CONFIG, 1024, 8, 77)[0]  # 8 heads × 16384² tokens
    skipped = timing.measure_attention(layer, CPU32, "materialised", free_bytes=2**30)
    assert not skipped.measured and skipped.seconds is None and skipped.reason.startswith("not measured")
    assert (1024, "self") in ac.would_not_fit([layer], free_bytes=2**30)
    assert not ac.would_not_fit([layer], free_bytes=2**40)


@pytest.mark.parametrize("kind", ["self", "cross"])
def test_sdpa_and_materialised_outputs_agree(kind):
    layer = next(x for x in ac.attention_layers(TOY_UNET_CONFIG, 64, 1, TOY_TEXT_TOKENS) if x.kind == kind)
    module = timing.attention_module(layer, CPU32)
    hidden, context = timing.layer_inputs(layer, CPU32)
    materialised = timing.run_attention(module, hidden, context, "materialised")
    fused = timing.run_attention(module, hidden, context, "sdpa")
    assert (materialised - fused).abs().max().item() <= AGREEMENT
    # A perturbation of the input well below what one would notice in an image breaks the agreement.
    nudged = timing.run_attention(module, hidden + 1e-3 * torch.randn_like(hidden), context, "sdpa")
    assert (materialised - nudged).abs().max().item() > AGREEMENT


@pytest.mark.parametrize("value, message", [
    ("", "resolutions is empty"),
    (" , ", "resolutions is empty"),
    ("abc", "'abc' is not a number"),
    ("64, x", "'x' is not a number"),
    ("12.5", "positive whole numbers"),
    ("-64", "positive whole numbers"),
    ("30", "30 is not a multiple of 4"),
    ("256", "above this profile's cap of 16384"),
    ("4, 8, 12, 16, 20, 24, 28", "at most 6 sizes"),
])
def test_bad_resolution_lists_get_clear_messages(value, message):
    endpoint = ATTENTION_COST.spec.bind(load_profile("toy"))
    with pytest.raises(ValueError, match="resolutions") as err:
        endpoint.parse({"resolutions": value})
    assert message in str(err.value)


def test_the_factor_is_the_models(tiny_sd_profile):
    """A multiple of 4 passes the toy; the tiny SD (latent, factor 4) refuses 6, which neither model could use."""
    assert ATTENTION_COST.spec.bind(load_profile("toy")).parse({"resolutions": "32"})["resolutions"] == [32]
    with pytest.raises(ValueError, match="6 is not a multiple of 4"):
        ATTENTION_COST.spec.bind(tiny_sd_profile).parse({"resolutions": "6"})
