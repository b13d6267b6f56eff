"""ControlNet checkpoints per control type, loaded like every other role (cached, safetensors only)."""

from __future__ import annotations

from pathlib import Path

import torch

from models.loading import ModelUnavailable, cached, unavailable
from models.profiles import Profile
from models.runtime import Runtime, pick_runtime

CONTROL_ROLES = {"canny": "controlnet_canny", "depth": "controlnet_depth", "pose": "controlnet_pose"}


def load_controlnet(source: str, runtime: Runtime | None = None, role: str = "controlnet_canny"):
    """A ``ControlNetModel`` from a hub id or a local folder, on the runtime's device and dtype."""
    runtime = runtime or pick_runtime()

    def build():
        from diffusers import ControlNetModel

        try:
            model = ControlNetModel.from_pretrained(source, torch_dtype=runtime.dtype, use_safetensors=True)
        except Exception as e:  # noqa: BLE001 - every failure becomes the same actionable message
            raise unavailable(role, source, e) from e
        return model.to(runtime.device).eval().requires_grad_(False)

    return cached(("controlnet", source, runtime), build)


def controlnet_role(control: str) -> str:
    if control not in CONTROL_ROLES:
        raise ValueError(f"control must be one of {', '.join(CONTROL_ROLES)}; got {str(control)[:80]!r}")
    return CONTROL_ROLES[control]


def controlnet_for(profile: Profile, control: str, runtime: Runtime | None = None):
    """The profile's ControlNet for ``control`` (canny, depth, pose), or a message saying why there is none."""
    role = controlnet_role(control)
    source = profile.source(role)
    if source is None:
        raise ModelUnavailable(
            f"The '{profile.name}' profile has no {control} ControlNet (role '{role}'). "
            + (
                "The toy world is flat shapes: there is no toy depth or pose model, only Canny. "
                if profile.name == "toy"
                else ""
            )
            + f"Use the full profile, or add  {role} = \"/path/to/controlnet\"  to a profile TOML."
        )
    return load_controlnet(source, runtime, role)


def build_tiny_controlnet(folder: Path, sd_folder: Path, seed: int = 0, zero_conv_std: float = 0.05) -> Path:
    """A ControlNet ``from_unet`` on a tiny SD folder's UNet, zero convs randomised so it has an effect.

    The conditioning embedding downsamples by the SD folder's VAE factor (pixel space: none), as
    SD 1.5's ControlNets downsample by 8, so a map of the output's size lands on the latent grid.
    """
    from diffusers import ControlNetModel, UNet2DConditionModel

    from pipelines.zero_conv import embedding_channels, zero_convs

    sd_folder = Path(sd_folder)
    unet = UNet2DConditionModel.from_pretrained(sd_folder, subfolder="unet")
    factor = 1
    if (sd_folder / "vae").is_dir():
        from diffusers import AutoencoderKL

        factor = 2 ** (len(AutoencoderKL.load_config(sd_folder, subfolder="vae")["block_out_channels"]) - 1)
    torch.manual_seed(seed)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=embedding_channels(factor))
    with torch.no_grad():
        for _, conv in zero_convs(controlnet):
            conv.weight.normal_(0, zero_conv_std)
            conv.bias.normal_(0, zero_conv_std)
        controlnet.controlnet_cond_embedding.conv_out.weight.normal_(0, zero_conv_std)
    controlnet.save_pretrained(folder, safe_serialization=True)
    return Path(folder)
