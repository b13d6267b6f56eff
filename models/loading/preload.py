"""Loading every role of a profile up front: on a Space the weights are fetched and loaded at startup, in the
main process, so no GPU slot ever waits for a download (ZeroGPU's documented pattern).

Locally the app keeps loading lazily, on first use (``tasks`` report "loading <role>" in the progress bar).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from models.adapters.preview import PREVIEW_ROLE, load_preview_vae
from models.loading.adm import CHOICES, load_adm_pair
from models.loading.annotators import load_midas, load_openpose
from models.loading.controlnet import CONTROL_ROLES, controlnet_for
from models.loading.dit import load_dit
from models.loading.flow import load_role_flow
from models.loading.image import load_clip, load_image_variations, load_ip_adapter
from models.loading.pixart import load_pixart
from models.loading.sd import load_role_sd, require_source, revision_of
from models.loading.toy_classifier import load_labelled_classifier
from models.profiles import Profile
from models.runtime import Runtime

Loader = Callable[[Profile, Runtime], object]


def _annotators(profile: Profile, runtime: Runtime) -> None:
    load_midas(profile.source("annotators"), runtime)
    load_openpose(profile.source("annotators"), runtime)


def _pixart(profile: Profile, runtime: Runtime) -> object:
    """PixArt-Σ from its two repos, with the same arguments ``tasks.text_models`` passes, so the request reuses the
    model loaded here (the cache key is the sources, revisions and runtime)."""
    options = profile.options("pixart")
    if not options.get("base"):
        raise ValueError("the profile's pixart role names no base repo (the T5 encoder, tokenizer, VAE and scheduler): "
                         'add base = "PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers" (or a folder) to its table')
    return load_pixart(require_source(profile, "pixart"), options["base"], runtime,
                       transformer_revision=revision_of(profile, "pixart"), base_revision=options.get("base_revision"))


def _adm(profile: Profile, runtime: Runtime) -> None:
    for choice in CHOICES:
        load_adm_pair(profile, choice, runtime)


# Role → how to load it; roles loaded together (ADM diffusion + classifier) share one entry.
LOADERS: dict[str, Loader] = {
    "sd": lambda p, r: load_role_sd(p, r, "sd"),
    "pixart": _pixart,
    "flow": lambda p, r: load_role_flow(p, r, "flow"),  # gated on the hub: HF_TOKEN, else a plain message
    **{role: (lambda p, r, c=control: controlnet_for(p, c, r)) for control, role in CONTROL_ROLES.items()},
    "annotators": _annotators,
    "image_variations": load_image_variations,
    "ip_adapter": load_ip_adapter,
    "clip": load_clip,
    PREVIEW_ROLE: lambda p, r: load_preview_vae(p.source(PREVIEW_ROLE), r),
    "adm_diffusion": _adm,
    "dit": load_dit,
    "classifier_noise_aware": lambda p, r: load_labelled_classifier(p.source("classifier_noise_aware"),
                                                                    "classifier_noise_aware", r),
    "classifier_clean": lambda p, r: load_labelled_classifier(p.source("classifier_clean"), "classifier_clean", r),
}
TOGETHER = {"adm_classifier": "adm_diffusion"}
MESSAGE_CHARS = 600  # of a failed role's message on the page: the loaders' messages end with what to do
# Roles that only add to an answer: when one fails, the page says what stands in and every tab still answers.
AIDS = {PREVIEW_ROLE: "previews and saturation diagnostics use a fitted linear latent→RGB map instead",
        "clip": "the CLIP cosine read-outs are skipped (cross-modal mode needs it)"}


@dataclass
class RoleStatus:
    role: str
    ok: bool
    seconds: float
    message: str = ""


def on_a_space() -> bool:
    """Hugging Face sets ``SPACE_ID`` in a Space's environment."""
    return bool(os.environ.get("SPACE_ID"))


def preload(profile: Profile, runtime: Runtime, report: Callable[[str], None] = print) -> list[RoleStatus]:
    """Load every role the profile names.

    A role that fails is reported, not fatal: its tab explains the failure when used, the others work.
    """
    roles = [r for r in LOADERS if profile.has(r)]
    roles += [TOGETHER[r] for r in TOGETHER if profile.has(r) and TOGETHER[r] not in roles]
    statuses = []
    for role in roles:
        report(f"loading {role} ({profile.display_source(role) or 'release default'}) …")
        start = time.perf_counter()
        try:
            LOADERS[role](profile, runtime)
        except Exception as e:  # noqa: BLE001 - one broken role must not stop the app from starting
            # Long enough for a whole instruction (the gated message ends with where to set HF_TOKEN).
            statuses.append(RoleStatus(role, False, time.perf_counter() - start, str(e)[:MESSAGE_CHARS]))
        else:
            statuses.append(RoleStatus(role, True, time.perf_counter() - start))
        report(f"  {role}: {'loaded' if statuses[-1].ok else 'failed'} in {statuses[-1].seconds:.1f} s")
    return statuses


def status_markdown(statuses: list[RoleStatus]) -> str:
    """What the page header shows about startup loading."""
    if not statuses:
        return "Models load on first use."
    loaded = [s for s in statuses if s.ok]
    text = f"Loaded at startup: {', '.join(f'`{s.role}` ({s.seconds:.0f} s)' for s in loaded) or 'nothing'}."
    failed = [s for s in statuses if not s.ok]
    if failed:
        text += " Not available: " + "; ".join(
            f"`{s.role}`: {s.message}" + (f" — {AIDS[s.role]}" if s.role in AIDS else "") for s in failed)
    return text
