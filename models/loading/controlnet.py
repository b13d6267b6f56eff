"""ControlNet checkpoints per control type, loaded like every other role (cached, safetensors only)."""

from __future__ import annotations

from models.cache import cached
from models.loading.sd import ModelUnavailable, load_weights, unavailable
from models.profiles import Profile
from models.runtime import Runtime, pick_runtime

CONTROL_ROLES = {"canny": "controlnet_canny", "depth": "controlnet_depth", "pose": "controlnet_pose"}


def load_controlnet(source: str, runtime: Runtime | None = None, role: str = "controlnet_canny"):
    """A ``ControlNetModel`` from a hub id or a local folder, on the runtime's device and dtype."""
    runtime = runtime or pick_runtime()

    def build():
        from diffusers import ControlNetModel

        try:
            model = load_weights(ControlNetModel, source, runtime)
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
