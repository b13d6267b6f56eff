"""The loaders as a GPU Space uses them: fp16 variant files when running in fp16, `.bin`-only repos accepted and
read with ``weights_only=True``, pinned revisions."""

from __future__ import annotations

import shutil

import pytest
import torch

from models.loading.sd import load_sd
from models.runtime import pick_runtime
from testing.tiny import build_tiny_sd

CPU16 = pick_runtime("cpu", "float16")
CPU32 = pick_runtime("cpu", "float32")


@pytest.fixture(scope="module")
def sd_with_variant(tmp_path_factory):
    """A tiny SD folder with ``*.fp16.safetensors`` beside the full files; the variant's UNet differs (marked)."""
    from diffusers import UNet2DConditionModel

    folder = build_tiny_sd(tmp_path_factory.mktemp("variant") / "sd")
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    with torch.no_grad():
        unet.conv_in.bias.fill_(0.5)  # the mark: only the fp16 files carry it
    unet.to(torch.float16).save_pretrained(folder / "unet", variant="fp16")
    for sub, cls_name in (("vae", "AutoencoderKL"), ("text_encoder", "CLIPTextModel")):
        module = __import__("diffusers" if sub == "vae" else "transformers", fromlist=[cls_name])
        getattr(module, cls_name).from_pretrained(folder, subfolder=sub).to(torch.float16).save_pretrained(
            folder / sub, variant="fp16")
    assert (folder / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    return folder


def test_fp16_runtime_reads_the_fp16_variant_and_fp32_the_full_files(sd_with_variant):
    half = load_sd(str(sd_with_variant), CPU16)
    full = load_sd(str(sd_with_variant), CPU32)
    assert half.unet.dtype == torch.float16 and full.unet.dtype == torch.float32
    assert torch.all(half.unet.conv_in.bias == 0.5)  # from diffusion_pytorch_model.fp16.safetensors
    assert not torch.all(full.unet.conv_in.bias == 0.5)  # from diffusion_pytorch_model.safetensors


def test_a_repo_without_the_variant_still_loads_in_fp16(tiny_sd_folder):
    sd = load_sd(str(tiny_sd_folder), CPU16)
    assert sd.unet.dtype == torch.float16 and sd.text_encoder.dtype == torch.float16


def test_bin_only_weights_load_and_every_torch_load_is_weights_only(tmp_path, tiny_sd_folder, monkeypatch):
    """A `.bin`-only folder (as the image-variations repo at v2.0) goes through the libraries' own loaders."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    folder = tmp_path / "bin_sd"
    shutil.copytree(tiny_sd_folder, folder)
    weights = {"unet": (UNet2DConditionModel, "diffusion_pytorch_model.bin"),
               "vae": (AutoencoderKL, "diffusion_pytorch_model.bin"),
               "text_encoder": (CLIPTextModel, "pytorch_model.bin")}
    for sub, (cls, name) in weights.items():
        state = cls.from_pretrained(tiny_sd_folder, subfolder=sub).state_dict()
        for f in (folder / sub).glob("*.safetensors"):
            f.unlink()
        torch.save(state, folder / sub / name)  # the pre-safetensors release format

    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    sd = load_sd(str(folder), CPU32)
    assert len(calls) == 3, calls  # unet, vae and text encoder each read from a .bin
    assert all(flag is True for flag in calls), calls
    reference = load_sd(str(tiny_sd_folder), CPU32)
    for a, b in zip(sd.unet.parameters(), reference.unet.parameters(), strict=True):
        assert torch.equal(a, b)
