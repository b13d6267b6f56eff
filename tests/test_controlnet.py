"""ControlNet through the one loop equals diffusers' StableDiffusionControlNetPipeline; control maps behave."""

import numpy as np
import pytest
import torch
from diffusers import MultiControlNetModel, StableDiffusionControlNetPipeline
from PIL import Image

from guidance.rules import GuidanceRule
from models.loading.controlnet import load_controlnet
from models.loading.sd import load_sd
from models.runtime import pick_runtime
from pipelines.controlnet import ControlSpec, control_keep, controlnet_to_image, map_embeddings_once
from pipelines.schedulers import make_scheduler
from testing.tiny import build_tiny_controlnet

CPU32 = pick_runtime("cpu", "float32")
SIZE = 32


@pytest.fixture(scope="module")
def nets(tiny_sd_folder, tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_cn")
    a = build_tiny_controlnet(root / "a", tiny_sd_folder, seed=1)
    b = build_tiny_controlnet(root / "b", tiny_sd_folder, seed=2)
    return load_controlnet(str(a), CPU32), load_controlnet(str(b), CPU32)


@pytest.fixture(scope="module")
def maps():
    rng = np.random.default_rng(0)
    edges = np.where(rng.random((SIZE, SIZE)) > 0.8, 255, 0).astype(np.uint8)
    grad = np.tile(np.linspace(0, 255, SIZE, dtype=np.uint8), (SIZE, 1))
    return Image.fromarray(np.stack([edges] * 3, -1)), Image.fromarray(np.stack([grad] * 3, -1))


def reference(sd, controlnet):
    pipe = StableDiffusionControlNetPipeline(
        vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer, unet=sd.unet, controlnet=controlnet,
        scheduler=make_scheduler("ddim", sd.scheduler_config), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


KW = dict(steps=5, width=SIZE, height=SIZE, num_images=2, seed=7)


@pytest.mark.parametrize("scale,start,end", [(1.0, 0.0, 1.0), (0.7, 0.2, 0.8)])
def test_single_controlnet_matches_diffusers(tiny_sd_folder, nets, maps, scale, start, end):
    sd = load_sd(str(tiny_sd_folder), CPU32)
    expected = reference(sd, nets[0])(
        "a red cat", image=maps[0], negative_prompt="blue", guidance_scale=6.0, num_inference_steps=5,
        height=SIZE, width=SIZE, num_images_per_prompt=2, controlnet_conditioning_scale=scale,
        control_guidance_start=start, control_guidance_end=end, output_type="pt",
        generator=torch.Generator("cpu").manual_seed(7),
    ).images
    out = controlnet_to_image(sd, [ControlSpec(nets[0], maps[0], scale, start, end)], "a red cat",
                              negative_prompt="blue", rule=GuidanceRule("cfg", 6.0), **KW)  # fmt: skip
    assert out.images.shape == expected.shape == (2, 3, SIZE, SIZE)
    assert (out.images - expected).abs().max().item() <= 1e-5
    # Not vacuous: without the ControlNet (scale 0) the image moves.
    off = controlnet_to_image(sd, [ControlSpec(nets[0], maps[0], 0.0)], "a red cat", negative_prompt="blue",
                              rule=GuidanceRule("cfg", 6.0), **KW)  # fmt: skip
    assert (off.images - expected).abs().max().item() > 1e-3
    n_on = sum(a[0] for a in out.active)
    assert n_on == sum(control_keep(i, 5, start, end) for i in range(5)) and (scale == 0 or n_on > 0)


def test_multi_controlnet_matches_diffusers(tiny_sd_folder, nets, maps):
    sd = load_sd(str(tiny_sd_folder), CPU32)
    expected = reference(sd, MultiControlNetModel(list(nets)))(
        "a red cat", image=list(maps), guidance_scale=5.0, num_inference_steps=5, height=SIZE, width=SIZE,
        num_images_per_prompt=2, controlnet_conditioning_scale=[0.9, 1.3], control_guidance_start=[0.0, 0.4],
        control_guidance_end=[0.6, 1.0], output_type="pt", generator=torch.Generator("cpu").manual_seed(7),
    ).images
    specs = [ControlSpec(nets[0], maps[0], 0.9, 0.0, 0.6), ControlSpec(nets[1], maps[1], 1.3, 0.4, 1.0)]
    out = controlnet_to_image(sd, specs, "a red cat", rule=GuidanceRule("cfg", 5.0), **KW)
    assert (out.images - expected).abs().max().item() <= 1e-5


def test_perp_cfg_eta_one_equals_cfg(tiny_sd_folder, nets, maps):
    sd = load_sd(str(tiny_sd_folder), CPU32)
    spec = [ControlSpec(nets[0], maps[0], 1.0)]
    a = controlnet_to_image(sd, spec, "a red cat", rule=GuidanceRule("cfg", 6.0), **KW).images
    b = controlnet_to_image(sd, spec, "a red cat", rule=GuidanceRule("perp-cfg", 6.0, eta=1.0), **KW).images
    c = controlnet_to_image(sd, spec, "a red cat", rule=GuidanceRule("perp-cfg", 6.0, eta=0.0), **KW).images
    assert (a - b).abs().max().item() <= 1e-5
    assert (a - c).abs().max().item() > 1e-4


def test_each_map_is_embedded_once_per_run_and_the_net_is_restored(tiny_sd_folder, nets, maps):
    sd = load_sd(str(tiny_sd_folder), CPU32)
    net = nets[0]
    original = net.controlnet_cond_embedding
    calls = []
    hook = original.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    try:
        controlnet_to_image(sd, [ControlSpec(net, maps[0])], "a red cat", rule=GuidanceRule("cfg", 6.0), **KW)
        # 5 steps, both CFG branches stacked: one embedding of the [4, 3, H, W] map, not five.
        assert calls == [torch.Size([4, 3, SIZE, SIZE])]
        assert net.controlnet_cond_embedding is original
        with pytest.raises(RuntimeError, match="boom"), map_embeddings_once([net]):
            assert net.controlnet_cond_embedding is not original
            raise RuntimeError("boom")
        assert net.controlnet_cond_embedding is original
        # A changed map (in place) is embedded again.
        calls.clear()
        image = torch.rand(1, 3, SIZE, SIZE)
        with map_embeddings_once([net]), torch.no_grad():
            first = net.controlnet_cond_embedding(image)
            again = net.controlnet_cond_embedding(image)
            image.mul_(0.5)
            changed = net.controlnet_cond_embedding(image)
        assert len(calls) == 2 and again is first and not torch.equal(changed, first)
    finally:
        hook.remove()


def test_control_keep_matches_diffusers_formula():
    # 10 steps, start 0.25, end 0.75: on for i with i/10 >= 0.25 and (i+1)/10 <= 0.75.
    assert [control_keep(i, 10, 0.25, 0.75) for i in range(10)] == [0, 0, 0, 1, 1, 1, 1, 0, 0, 0]
    assert all(control_keep(i, 4, 0.0, 1.0) == 1.0 for i in range(4))


@pytest.mark.parametrize(
    "scale,start,end,match",
    [(2.5, 0, 1, "conditioning_scale"), (-0.1, 0, 1, "conditioning_scale"), (float("nan"), 0, 1, "conditioning_scale"),
     (1, 0.8, 0.2, "must not be after"), (1, -0.1, 1, "guidance_start"), (1, 0, 1.5, "guidance_end")],
)
def test_bad_control_numbers(nets, maps, scale, start, end, match):
    with pytest.raises(ValueError, match=match):
        ControlSpec(nets[0], maps[0], scale, start, end)


def test_mismatched_controlnet_is_refused(tiny_sd_folder, maps, tmp_path):
    from diffusers import ControlNetModel

    sd = load_sd(str(tiny_sd_folder), CPU32)
    net = ControlNetModel.from_unet(sd.unet)  # default ×8 embedding, but the tiny VAE is ×2
    with pytest.raises(ValueError, match="different base model"):
        controlnet_to_image(sd, [ControlSpec(net, maps[0])], "a cat", rule=GuidanceRule("cfg", 5.0), **KW)


def test_row_budget_chunks_controlnet_calls_exactly(tiny_sd_folder, tmp_path):
    from models.runtime import rows_at_most

    sd = load_sd(str(tiny_sd_folder), CPU32)
    net = load_controlnet(str(build_tiny_controlnet(tmp_path / "cn", tiny_sd_folder, seed=4)), CPU32)
    cmap = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    run = dict(KW, rule=GuidanceRule("cfg", 5.0), num_images=3)
    whole = controlnet_to_image(sd, [ControlSpec(net, cmap, 0.8, 0.0, 0.5)], "a red cat", **run)
    with rows_at_most(4):
        chunked = controlnet_to_image(sd, [ControlSpec(net, cmap, 0.8, 0.0, 0.5)], "a red cat", **run)
    assert (whole.images - chunked.images).abs().max().item() <= 1e-5
    assert chunked.active == whole.active  # one record per step, not per chunk
