"""Text-to-image tab, library level: the Gradio-free tasks against diffusers' StableDiffusionPipeline."""

import ast

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image
from task_calls import positional

from guidance.rules import GuidanceRule
from models.loading.sd import load_sd
from models.profiles import load_profile
from models.runtime import pick_runtime
from pipelines.attention import RecordingProcessor, cross_attention_layers, token_positions
from pipelines.schedulers import make_scheduler
from pipelines.sweep import guidance_sweep, parse_scales, sweep_grid
from pipelines.text_to_image import text_to_image
from reporting.metadata import client_snippet, read_png_metadata, save_png
from tasks.text_to_image import GUIDANCE_SWEEP, TEXT_TO_IMAGE

CPU32 = pick_runtime("cpu", "float32")
PROMPT = "a photo of a red cat"
SMALL = dict(steps=4, width=32, height=32)


T2I_ORDER = ("prompt", "negative_prompt", "guidance", "scale", "eta", "basis", "rescale", "steps", "width", "height",
             "seed", "scheduler", "num_images", "attention_token")
SWEEP_ORDER = ("prompt", "negative_prompt", "scales", "eta", "basis", "rescale", "steps", "width", "height", "seed",
               "scheduler")


def make_endpoints(profile):
    return positional(TEXT_TO_IMAGE, profile, T2I_ORDER), positional(GUIDANCE_SWEEP, profile, SWEEP_ORDER)




def write_profile(folder, sd: str | None, **limits) -> str:
    lines = [f'sd = "{sd}"'] if sd is not None else []
    lines += ["[limits]", "max_pixels = 4096", "max_steps = 10", "max_images = 2"]
    lines += [f"{k} = {v}" for k, v in limits.items()]
    path = folder / "profile.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def endpoints(tiny_sd_folder, tmp_path_factory):
    return make_endpoints(load_profile(write_profile(tmp_path_factory.mktemp("profile"), str(tiny_sd_folder))))


@pytest.fixture(scope="module")
def reference(tiny_sd_folder):
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_folder, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def as_array(images) -> np.ndarray:
    return np.stack([np.asarray(img[0] if isinstance(img, tuple) else img, dtype=np.int16) for img in images])


@pytest.mark.parametrize("negative,phi", [("", 0.0), ("blue square", 0.0), ("", 0.7)])
def test_endpoint_matches_stable_diffusion_pipeline(endpoints, reference, tiny_sd_folder, negative, phi):
    t2i, _ = endpoints
    sd = load_sd(str(tiny_sd_folder), CPU32)
    reference.scheduler = make_scheduler("ddim", sd.scheduler_config)
    expected = reference(
        PROMPT, negative_prompt=negative or None, guidance_scale=7.5, guidance_rescale=phi, num_inference_steps=4,
        height=32, width=32, num_images_per_prompt=2, generator=torch.Generator("cpu").manual_seed(7),
    ).images
    gallery, plot, meta, seed, overlays, snippet, saturation, compare = t2i(
        PROMPT, negative, "cfg", 7.5, 0.0, "uncond", phi, 4, 32, 32, 7, "ddim", 2, "")
    assert seed == 7 and meta["seed"] == 7 and overlays == [] and compare is None
    assert np.abs(as_array(gallery) - as_array(expected)).max() <= 1
    assert meta["rule"]["formula"].startswith("ε = u + w (c − u)") and "diffusers" in meta["versions"]
    assert list(plot.columns) == ["step", "value", "series"] and len(plot) == 2 * 4  # ‖Δ∥‖ and ‖Δ⊥‖ at 4 steps
    assert {name.split(", %")[0] for name in saturation["series"]} == {"x̂0 outside [−1, 1]",
                                                                      "colour saturation (mean HSV S)"}
    ast.parse(snippet)
    # Not vacuous: another seed gives other pixels.
    other = t2i(PROMPT, negative, "cfg", 7.5, 0.0, "uncond", phi, 4, 32, 32, 8, "ddim", 2, "")[0]
    assert np.abs(as_array(other) - as_array(expected)).max() > 1


def test_perp_cfg_eta_one_equals_cfg_through_endpoint(endpoints):
    t2i, _ = endpoints
    a = t2i(PROMPT, "", "cfg", 6.0, 0.0, "uncond", 0.0, 4, 32, 32, 3, "euler", 2, "")[0]
    b = t2i(PROMPT, "", "perp-cfg", 6.0, 1.0, "uncond", 0.0, 4, 32, 32, 3, "euler", 2, "")[0]
    c = t2i(PROMPT, "", "perp-cfg", 6.0, 0.0, "uncond", 0.0, 4, 32, 32, 3, "euler", 2, "")[0]
    assert np.abs(as_array(a) - as_array(b)).max() <= 1
    assert np.abs(as_array(a) - as_array(c)).max() > 1


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_end_to_end(endpoints, monkeypatch, dtype):
    """The CUDA path's half dtypes, on the CPU: the same endpoint with CONDLAB_DTYPE set."""
    t2i, _ = endpoints
    monkeypatch.setenv("CONDLAB_DTYPE", dtype)
    try:
        gallery, _, meta, *_ = t2i(PROMPT, "dog", "perp-cfg", 7.5, 0.0, "uncond", 0.7, 3, 32, 32, 1, "dpm++2m", 1, "")
    except ValueError as e:
        if dtype == "float16" and "NotImplementedError" in str(e):
            pytest.skip(f"float16 CPU kernels missing: {e}")
        raise
    assert meta["runtime"] == f"cpu {dtype}"
    monkeypatch.delenv("CONDLAB_DTYPE")
    full = t2i(PROMPT, "dog", "perp-cfg", 7.5, 0.0, "uncond", 0.7, 3, 32, 32, 1, "dpm++2m", 1, "")[0]
    half, ref = as_array(gallery), as_array(full)
    assert half.shape == ref.shape == (1, 32, 32, 3)
    # Half precision drifts a little, but the image is the same image, not noise or NaN-black.
    assert np.abs(half - ref).mean() < 12, np.abs(half - ref).mean()


BAD = [
    (dict(scale=float("nan")), "scale"), (dict(scale=-1), "scale"), (dict(scale=1e9), "scale"),
    (dict(steps=0), "steps"), (dict(steps=11), "steps"), (dict(width=33), "multiple of 8"),
    (dict(width=128, height=128), "pixels"), (dict(scheduler="plms"), "scheduler"), (dict(num_images=3), "num_images"),
    (dict(guidance="pag"), "guidance"), (dict(eta=2), "eta"), (dict(seed=-2), "seed"), (dict(basis="x"), "basis"),
]


@pytest.mark.parametrize("bad,word", BAD, ids=[next(iter(b)) + str(i) for i, (b, _) in enumerate(BAD)])
def test_bad_input_rejected_before_model_work(tmp_path, bad, word):
    # The model folder does not exist: an error about the input proves no load was attempted.
    t2i, _ = make_endpoints(load_profile(write_profile(tmp_path, str(tmp_path / "missing"))))
    kw = dict(prompt="x", guidance="cfg", scale=7.5, eta=0.0, basis="uncond", rescale=0.0, steps=2, width=32,
              height=32, seed=0, scheduler="ddim", num_images=1)
    with pytest.raises(ValueError, match=word):
        t2i(**{**kw, **bad})


def test_missing_role_and_missing_model_messages(tmp_path):
    t2i, sweep = make_endpoints(load_profile(write_profile(tmp_path, None)))
    for call in (lambda: t2i("x", "", "cfg", 7.5, 0, "uncond", 0, 2, 32, 32, 0, "ddim", 1, ""),
                 lambda: sweep("x", "", "1, 2", 0, "uncond", 0, 2, 32, 32, 0, "ddim")):
        with pytest.raises(ValueError) as err:
            call()
        assert "names no 'sd' model" in str(err.value)
    missing = str(tmp_path / "nowhere")
    t2i, _ = make_endpoints(load_profile(write_profile(tmp_path, missing)))
    with pytest.raises(ValueError) as err:
        t2i("x", "", "cfg", 7.5, 0, "uncond", 0, 2, 32, 32, 0, "ddim", 1, "")
    message = str(err.value)
    assert "'sd'" in message and missing in message and "profile" in message


def test_long_prompt_is_truncated_and_reported(endpoints):
    t2i, _ = endpoints
    meta = t2i("red cat " * 60, "", "cfg", 5, 0, "uncond", 0, 1, 32, 32, 0, "ddim", 1, "")[2]
    assert meta["truncated"] and "77 tokens" in meta["notes"][0]


@pytest.mark.parametrize("scheduler", ["ddim", "euler-a"])
def test_batched_sweep_equals_individual_runs(tiny_sd_folder, scheduler):
    sd = load_sd(str(tiny_sd_folder), CPU32)
    small = dict(SMALL, steps=3)
    out = guidance_sweep(sd, PROMPT, [1.0, 12.0], negative_prompt="dog", options=dict(eta=0.2, rescale=0.3), seed=11,
                         scheduler=scheduler, **small)
    assert out.images.shape == (4, 3, 32, 32)
    for k, (name, scale) in enumerate(out.cells):
        single = text_to_image(sd, PROMPT, negative_prompt="dog", rule=GuidanceRule(name, scale, eta=0.2, rescale=0.3),
                               seed=11, scheduler=scheduler, **small).images[0]
        assert (out.images[k] - single).abs().max().item() <= 1e-4, (name, scale)
    grid = sweep_grid(out.images, out.cells)
    assert grid.width > 2 * 32 and grid.height > 2 * 32


def test_sweep_endpoint_and_scale_parsing(endpoints):
    _, sweep = endpoints
    grid, meta, seed = sweep(PROMPT, "", "1, 7.5", 0, "uncond", 0, 2, 32, 32, 5, "ddim")
    assert seed == 5 and meta["batched_rows"] == 4 and isinstance(grid, Image.Image)
    assert read_png_metadata(grid)["parameters"]["scales"] == "1, 7.5"  # as the endpoint takes it
    assert parse_scales(" 1;3 ,7.5") == [1.0, 3.0, 7.5]
    for bad in ("", "1, x", "nan", "-1", "31", ",".join(["1"] * 9)):
        with pytest.raises(ValueError):
            parse_scales(bad)


def test_attention_off_installs_nothing_and_on_changes_no_pixel(tiny_sd_folder):
    sd = load_sd(str(tiny_sd_folder), CPU32)
    rule = GuidanceRule("cfg", 7.5)

    def kinds(_state):
        seen.append(sum(isinstance(p, RecordingProcessor) for p in sd.unet.attn_processors.values()))

    seen: list[int] = []
    off = text_to_image(sd, PROMPT, rule=rule, num_images=2, callback=kinds, **SMALL)
    assert seen == [0] * 4 and off.attention is None
    seen.clear()
    on = text_to_image(sd, PROMPT, rule=rule, num_images=2, callback=kinds, attention=True, **SMALL)
    assert seen == [len(cross_attention_layers(sd.unet))] * 4 and seen[0] > 0
    assert not any(isinstance(p, RecordingProcessor) for p in sd.unet.attn_processors.values())
    assert torch.equal(on.images, off.images)
    maps = on.attention
    assert maps.shape == (2, 16, 16, sd.tokenizer.model_max_length)  # latent grid of a 32x32 image
    assert torch.allclose(maps.sum(-1), torch.ones(2, 16, 16), atol=1e-4)
    assert (maps >= 0).all()


def test_attention_endpoint_overlay_and_token_lookup(endpoints):
    t2i, _ = endpoints
    gallery, _, _, _, overlays, _, _, _ = t2i(PROMPT, "", "cfg", 7.5, 0, "uncond", 0, 2, 32, 32, 1, "ddim", 2, "red")
    assert len(overlays) == 2 and overlays[0][0].size == gallery[0][0].size
    assert token_positions(["a", "photo", "of", "a", "red", "cat"], "RED") == [5]
    assert token_positions(["re", "d", "cat"], "red") == [1, 2]
    with pytest.raises(ValueError, match="not in the prompt"):
        token_positions(["a", "cat"], "dog")
    with pytest.raises(ValueError, match="not in the prompt"):
        t2i(PROMPT, "", "cfg", 7.5, 0, "uncond", 0, 2, 32, 32, 1, "ddim", 1, "zebra")


def test_png_metadata_round_trip_and_snippet(tmp_path, endpoints):
    t2i, _ = endpoints
    gallery, *_, snippet, _saturation, _compare = t2i(PROMPT, "", "cfg", 7.5, 0, "uncond", 0, 2, 32, 32, 9, "ddim", 1,
                                                      "")
    path = save_png(gallery[0][0], tmp_path / "x.png")
    with Image.open(path) as img:
        assert img.format == "PNG" and "Negative" not in img.text["parameters"]
        assert read_png_metadata(img)["parameters"]["seed"] == 9
    assert "api_name='/text_to_image'" in snippet and "seed=9" in snippet
    code = client_snippet("guidance_sweep", {"prompt": "a 'quoted' prompt", "scales": [1.0, 2.0]})
    ast.parse(code)


def test_timeout_stops_at_a_step_boundary_with_a_clear_message(tiny_sd_folder, tmp_path, monkeypatch):
    from tasks.spec import RunTimeout

    profile = load_profile(write_profile(tmp_path, str(tiny_sd_folder)))
    seen = []
    monkeypatch.setenv("CONDLAB_TIMEOUT_S", "0")
    with pytest.raises(RunTimeout, match=r"stopped at step 1 of 4 .*allows 0 s per request") as err:
        TEXT_TO_IMAGE(profile, lambda done, total, desc: seen.append(done), prompt=PROMPT, **SMALL)
    assert isinstance(err.value, ValueError)  # the UI turns it into a gr.Error like any bad request
    assert seen == [0, 1]  # the loading notice, then one step: it stopped at the first boundary
    monkeypatch.setenv("CONDLAB_TIMEOUT_S", "600")
    assert len(TEXT_TO_IMAGE(profile, prompt=PROMPT, **SMALL).outputs["images"]) == 1  # and the next one runs


def test_row_budget_chunks_model_calls_and_decodes_without_changing_pixels(tiny_sd_folder):
    """A sweep's 2 × cells rows go through the UNet (and the VAE) at most max_batch_rows at a time."""
    from models.runtime import rows_at_most

    sd = load_sd(str(tiny_sd_folder), CPU32)
    batches: list[int] = []
    decodes: list[int] = []
    hook = sd.unet.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    real_decode = sd.vae.decode

    def counting_decode(z, **kw):
        decodes.append(z.shape[0])
        return real_decode(z, **kw)

    try:
        whole = guidance_sweep(sd, PROMPT, [1.0, 5.0, 9.0], steps=2, width=32, height=32, seed=3)
        assert batches == [12, 12]  # 6 cells × 2 branches, one call per step
        batches.clear()
        sd.vae.decode = counting_decode
        with rows_at_most(5):
            chunked = guidance_sweep(sd, PROMPT, [1.0, 5.0, 9.0], steps=2, width=32, height=32, seed=3)
    finally:
        hook.remove()
        sd.vae.decode = real_decode
    assert batches == [5, 5, 2] * 2 and decodes == [5, 1]
    assert (whole.images - chunked.images).abs().max().item() <= 1e-5


def test_progress_says_which_model_loads_and_its_size_before_the_steps(tiny_sd_folder, tmp_path):
    profile = load_profile(write_profile(tmp_path, str(tiny_sd_folder)))
    seen = []
    TEXT_TO_IMAGE(profile, lambda done, total, desc: seen.append((done, total, desc)), prompt=PROMPT, **SMALL)
    assert seen[0][2].startswith("loading sd (") and seen[0][2].endswith(" GB)")
    assert [s[:2] for s in seen[1:]] == [(i, 4) for i in range(1, 5)]  # then one tick per denoising step
