"""``/attention_cost``: the walked layer list against a count made from the config alone (UNets and MM-DiTs), the
lecture's numbers, SD3.5 Medium's joint-attention matrices, the measured growth of materialised attention, a joint
layer being one softmax over N + M tokens, SDPA against materialised outputs, and bad resolution lists.

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
from tasks.attention_cost import ATTENTION_COST, default_resolutions

TOY_UNET_CONFIG = json.loads((ROOT / "assets" / "toy" / "sd" / "unet" / "config.json").read_text())
TOY_TEXT_TOKENS = 24  # the toy tokenizer's model_max_length
TOY_FLOW = ROOT / "assets" / "toy" / "flow"
TOY_FLOW_CONFIG = json.loads((TOY_FLOW / "transformer" / "config.json").read_text())
# The toy MM-DiT's joint sequence: its CLIP window and its T5 window (each tokenizer's model_max_length, T5's under
# SD3's cap of 256), read from the tokenizer files rather than from the code under test.
TOY_FLOW_TEXT_TOKENS = sum(min(256, json.loads((TOY_FLOW / name / "tokenizer_config.json").read_text())
                               ["model_max_length"]) for name in ("tokenizer", "tokenizer_3"))
TOY_FLOW_MAX_SIDE = TOY_FLOW_CONFIG["pos_embed_max_size"] * TOY_FLOW_CONFIG["patch_size"]  # pixel space: no VAE
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


def independent_mmdit_count(config: dict, resolution: int, vae_scale: int, text_tokens: int) -> list[tuple]:
    """(kind, queries, keys, heads, head dim) per attention call of an SD3 MM-DiT, from the config's numbers alone:
    each of num_layers blocks runs one joint attention over the N image patches and the M text tokens together, then,
    if listed in dual_attention_layers, an image-only self-attention."""
    image = (resolution // vae_scale // config["patch_size"]) ** 2
    heads, head_dim = config["num_attention_heads"], config["attention_head_dim"]
    rows: list[tuple] = []
    for block in range(config["num_layers"]):
        rows.append(("joint", image + text_tokens, image + text_tokens, heads, head_dim))
        if block in config.get("dual_attention_layers", ()):
            rows.append(("self", image, image, heads, head_dim))
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


@pytest.mark.parametrize("kind", ["self", "cross", "joint"])
def test_sdpa_and_materialised_outputs_agree(kind):
    layers = (ac.mmdit_attention_layers(TOY_FLOW_CONFIG, 16, 1, TOY_FLOW_TEXT_TOKENS) if kind == "joint"
              else ac.attention_layers(TOY_UNET_CONFIG, 64, 1, TOY_TEXT_TOKENS))
    layer = next(x for x in layers if x.kind == kind)
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


# ---------------------------------------------------------------------- MM-DiT (the flow role): joint attention


def test_toy_flow_rows_equal_an_independent_count():
    """Through the endpoint with model=flow: every row at every size, M as the model's own prompt encoding makes it,
    one row per attention module of the loaded transformer."""
    from models.loading.flow import load_role_flow
    from pipelines.flow import flow_prompts

    toy = load_profile("toy")
    sides = [TOY_FLOW_MAX_SIDE // 4, TOY_FLOW_MAX_SIDE // 2, TOY_FLOW_MAX_SIDE]
    result = ATTENTION_COST(toy, model="flow", resolutions=", ".join(map(str, sides)), measure=False)
    meta = result.outputs["metadata"]
    assert (meta["model"], meta["architecture"], meta["text_tokens"]) == ("flow", "MM-DiT", TOY_FLOW_TEXT_TOKENS)
    flow = load_role_flow(toy, pick_runtime())
    assert flow_prompts(flow, "a red circle").tokens.shape[1] == meta["text_tokens"]  # the sequence really is M long
    for resolution in sides:
        rows = [x for x in meta["layers"] if x["resolution"] == resolution]
        assert walked(rows) == independent_mmdit_count(TOY_FLOW_CONFIG, resolution, 1, TOY_FLOW_TEXT_TOKENS)
        assert len(rows) == len(flow.transformer.attn_processors)
    assert set(meta["slopes"]) == {"joint"} and 1.0 < meta["slopes"]["joint"] < 2.0  # (N + M)², M a large share
    assert "| joint |" in result.outputs["table"] and result.outputs["plot"].size[0] > 100


def test_sd35_medium_rows_from_its_config_and_the_readme_numbers():
    """SD3.5 Medium at 512² and 1024²: 24 joint layers over N + 333 tokens and 13 image-only ones (dual attention);
    one joint layer's matrix from the config alone equals the walked layer's."""
    config = ac.SD35_MEDIUM_TRANSFORMER_CONFIG
    for resolution, image in ((512, 1024), (1024, 4096)):
        layers = ac.mmdit_attention_layers(config, resolution, ac.SD35_VAE_SCALE, ac.SD35_TEXT_TOKENS)
        assert walked(layers) == independent_mmdit_count(config, resolution, 8, 77 + 256)
        assert [x.kind for x in layers].count("joint") == 24 and [x.kind for x in layers].count("self") == 13
        joint = next(x for x in layers if x.kind == "joint")
        numbers = ac.joint_matrix_bytes(config, resolution)
        assert (numbers["image_tokens"], numbers["sequence"]) == (image, image + 333)
        assert numbers["layer_bytes"] == joint.matrix_bytes("fp16") == 24 * (image + 333) ** 2 * 2
    assert ac.joint_matrix_bytes(config, 512)["layer_bytes"] == 88_389_552  # 84.3 MiB per layer and image, fp16
    assert ac.joint_matrix_bytes(config, 1024)["layer_bytes"] == 941_569_968  # 898 MiB
    assert ac.joint_matrix_bytes(config, 1024)["one_head_bytes"] == 39_232_082
    assert ac.joint_matrix_bytes(config, 1024, precision="fp32")["layer_bytes_cfg"] == 4 * 941_569_968
    with pytest.raises(ValueError, match="precision must be one of fp32, fp16"):
        ac.joint_matrix_bytes(config, 512, precision="int8")
    with pytest.raises(ValueError, match="not a multiple of the model's factor 16"):
        ac.joint_matrix_bytes(config, 520)


def test_the_independent_mmdit_count_can_fail():
    """The walk disagrees with counts that forget the dual-attention layers, count the CLIP window alone, or read the
    blocks the UNet way (N² self plus N·M cross)."""
    config = ac.SD35_MEDIUM_TRANSFORMER_CONFIG
    layers = walked(ac.mmdit_attention_layers(config, 512, 8, 333))
    assert layers != independent_mmdit_count({**config, "dual_attention_layers": ()}, 512, 8, 333)
    assert layers != independent_mmdit_count(config, 512, 8, 77)
    unet_view = [row for kind, n, _, h, d in independent_mmdit_count(config, 512, 8, 333) if kind == "joint"
                 for row in (("self", n - 333, n - 333, h, d), ("cross", n - 333, 333, h, d))]
    assert layers != unet_view
    toy = walked(ac.mmdit_attention_layers(TOY_FLOW_CONFIG, TOY_FLOW_MAX_SIDE, 1, TOY_FLOW_TEXT_TOKENS))
    assert toy != independent_mmdit_count(TOY_FLOW_CONFIG, TOY_FLOW_MAX_SIDE, 1, TOY_TEXT_TOKENS)


def test_a_joint_layer_is_one_softmax_over_n_plus_m_tokens():
    """diffusers' JointAttnProcessor2_0 on a toy MM-DiT block equals one materialised (N + M)² softmax over both
    streams' projections; the UNet reading (image keys and text keys in two softmaxes) gives another output."""
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(0)
    block = SD3Transformer2DModel.from_config({k: v for k, v in TOY_FLOW_CONFIG.items() if not k.startswith("_")})
    attn = block.transformer_blocks[0].attn.eval()
    width, heads = attn.to_q.in_features, attn.heads
    image, text = torch.randn(1, 16, width), torch.randn(1, TOY_FLOW_TEXT_TOKENS, width)
    with torch.no_grad():
        out_image, out_text = attn(hidden_states=image, encoder_hidden_states=text)

        def split(x, norm):
            x = x.view(1, -1, heads, x.shape[-1] // heads).transpose(1, 2)
            return norm(x) if norm is not None else x

        query = torch.cat([split(attn.to_q(image), attn.norm_q), split(attn.add_q_proj(text), attn.norm_added_q)], 2)
        key = torch.cat([split(attn.to_k(image), attn.norm_k), split(attn.add_k_proj(text), attn.norm_added_k)], 2)
        value = torch.cat([split(attn.to_v(image), None), split(attn.add_v_proj(text), None)], 2)
        scale = query.shape[-1] ** -0.5
        matrix = (query @ key.transpose(-1, -2) * scale).softmax(-1)  # [1, heads, N + M, N + M]
        assert matrix.shape[-2:] == (16 + TOY_FLOW_TEXT_TOKENS,) * 2
        joint = (matrix @ value).transpose(1, 2).reshape(1, -1, width)
        assert (attn.to_out[0](joint[:, :16]) - out_image).abs().max().item() <= AGREEMENT
        assert (attn.to_add_out(joint[:, 16:]) - out_text).abs().max().item() <= AGREEMENT
        # Two softmaxes, image→image and image→text, as a UNet's self- and cross-attention would compute them.
        image_q = query[:, :, :16]
        parts = [(image_q @ key[:, :, s].transpose(-1, -2) * scale).softmax(-1) @ value[:, :, s]
                 for s in (slice(0, 16), slice(16, None))]
        unet_view = attn.to_out[0]((parts[0] + parts[1]).transpose(1, 2).reshape(1, -1, width))
        assert (unet_view - out_image).abs().max().item() > 1e-3


def test_measured_joint_rows_on_the_toy_flow_grow_with_n_plus_m_squared():
    """Materialised joint attention at the toy MM-DiT's two largest sides, fp32 on the CPU: the measured peak grows
    as the analytic (N + M)²-plus-projections estimate does, not as N² (the image tokens alone) nor as N·M."""
    sides = (TOY_FLOW_MAX_SIDE // 2, TOY_FLOW_MAX_SIDE)
    layers = [x for r in sides for x in ac.mmdit_attention_layers(TOY_FLOW_CONFIG, r, 1, TOY_FLOW_TEXT_TOKENS)]
    measurements = timing.measure_kinds(layers, CPU32, repeats=1)
    assert all(m.measured for m in measurements) and {m.kind for m in measurements} == {"joint"}
    (ratio,) = timing.growth(measurements, "joint")
    small, large = (ac.largest_layers(layers)[(r, "joint")] for r in sides)
    expected = ac.materialised_peak_bytes(large, 4) / ac.materialised_peak_bytes(small, 4)
    assert ac.is_close_ratio(ratio, expected, SELF_TOLERANCE), (ratio, expected)
    image_only = (large.image_tokens / small.image_tokens) ** 2  # 16: what a self-attention over N alone would do
    assert not ac.is_close_ratio(ratio, image_only, SELF_TOLERANCE)
    assert not ac.is_close_ratio(ratio, large.image_tokens / small.image_tokens, CROSS_TOLERANCE)  # N·M: 4
    peaks = {(m.resolution, m.processor): m.peak_bytes for m in measurements}
    assert peaks[(sides[1], "sdpa")] < peaks[(sides[1], "materialised")] / 2


def test_the_model_choice_is_the_profiles_unet_and_mmdit_roles():
    toy, full = load_profile("toy"), load_profile("full")
    assert ATTENTION_COST.spec.bind(toy).field("model").choices == ("sd", "sd_t5", "flow")
    full_endpoint = ATTENTION_COST.spec.bind(full)
    assert full_endpoint.field("model").choices == ("sd", "flow")  # PixArt-Σ's DiT is not walked here
    with pytest.raises(ValueError, match="model must be one of sd, flow; got 'pixart'"):
        full_endpoint.parse({"model": "pixart"})
    endpoint = ATTENTION_COST.spec.bind(toy)
    for role in ("sd", "sd_t5", "flow"):  # each model's starting sizes are sizes it takes
        sides = endpoint.parse({"model": role, "resolutions": default_resolutions(toy, role)})["resolutions"]
        assert len(sides) == 3 and max(sides) <= (TOY_FLOW_MAX_SIDE if role == "flow" else 128)


@pytest.mark.parametrize("value, message", [
    (str(2 * TOY_FLOW_MAX_SIDE), f"past the {TOY_FLOW_MAX_SIDE} px this model's positional embedding covers"),
    ("7", "7 is not a multiple of 2, this model's factor (the VAE's downsampling times the transformer's patch)"),
])
def test_bad_sizes_for_the_flow_model_get_clear_messages(value, message):
    endpoint = ATTENTION_COST.spec.bind(load_profile("toy"))
    with pytest.raises(ValueError, match="resolutions") as err:
        endpoint.parse({"model": "flow", "resolutions": value})
    assert message in str(err.value)
