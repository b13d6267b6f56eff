"""The full profile's real loading code, on a replica of the hub: real repo ids, revisions, subfolders, file names.

The app is started unchanged with ``--profile full`` and ``HF_HUB_OFFLINE=1``, ``HF_HOME`` pointing at the replica:
the same ``from_pretrained(repo_id, …)`` and ``hf_hub_download`` calls a Space makes resolve every role.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gradio_client import handle_file
from live_app import live_app
from PIL import Image

from testing.hub_replica import REPOS, build_hub_replica, front_matter
from testing.tiny_pixart import PIXART_BASE_REPO, PIXART_TRANSFORMER_REPO
from testing.tiny_sd3 import SD35_REPO_ID, SD35_REVISION

ROOT = Path(__file__).resolve().parents[1]
PHOTO = str(ROOT / "assets" / "photos" / "astronaut.png")
CAT = str(ROOT / "assets" / "photos" / "chelsea.png")
SIZE = dict(width=32, height=32)  # the replica's SD works on 16² latents

pytestmark = pytest.mark.live

PRELOAD = """
import json
from models.loading.preload import preload
from models.profiles import load_profile
from models.runtime import pick_runtime
statuses = preload(load_profile("full"), pick_runtime(), report=lambda message: None)
print(json.dumps({s.role: [s.ok, s.message] for s in statuses}))
"""


def replica_env(built: dict, **extra: str) -> dict[str, str]:
    return {"HF_HOME": str(built["hf_home"]), "CONDLAB_ADM_CACHE": str(built["adm_cache"]), "HF_HUB_OFFLINE": "1",
            "CONDLAB_DEVICE": "cpu", **extra}


# The hub's answer for a gated repo (HTTP 401, GatedRepoError) where the flow loader first asks for a file
# (model_index.json, through diffusers' hf_hub_download): no network; every other repo resolves from the replica.
GATED = f"""
import httpx
import diffusers.configuration_utils as configuration
from huggingface_hub.errors import GatedRepoError
real_download = configuration.hf_hub_download

def download(repo_id, filename, **kwargs):
    if repo_id == {SD35_REPO_ID!r}:
        url = f"https://huggingface.co/{{repo_id}}/resolve/{{kwargs.get('revision')}}/{{filename}}"
        raise GatedRepoError(f"401 Client Error. Cannot access gated repo for url {{url}}.",
                             response=httpx.Response(401, request=httpx.Request("GET", url)))
    return real_download(repo_id, filename, **kwargs)

configuration.hf_hub_download = download
from models.loading.preload import status_markdown
""" + PRELOAD + "print(json.dumps(status_markdown(statuses)))\n"
ROLE_REPOS = {"pixart": PIXART_TRANSFORMER_REPO, "flow": SD35_REPO_ID}
FULL_ROLES = {"sd", "controlnet_canny", "controlnet_depth", "controlnet_pose", "annotators", "image_variations",
              "ip_adapter", "clip", "adm_diffusion", "preview_vae", "dit", "pixart", "flow"}


def preload_in_subprocess(env: dict[str, str], script: str = PRELOAD, drop: tuple[str, ...] = (),
                          lines: int = 1) -> list:
    """The Space's startup loading (models/loading/preload.py) in a fresh process: huggingface_hub reads HF_HOME at
    import. ``drop``: variables of this environment the process must not see; returns the last ``lines`` JSON
    lines of its output (one: the role → [ok, message] table)."""
    base = {k: v for k, v in os.environ.items() if k not in drop}
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**base, **env}, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = [json.loads(line) for line in proc.stdout.strip().splitlines()[-lines:]]
    return out[0] if lines == 1 else out


def test_every_role_of_the_full_profile_loads_from_the_replica(hub_replica):
    statuses = preload_in_subprocess(replica_env(hub_replica))
    assert set(statuses) == FULL_ROLES
    failed = {role: message for role, (ok, message) in statuses.items() if not ok}
    assert not failed, failed


def replica_without(hub_replica: dict, repo_id: str, root: Path) -> dict:
    """The replica with one repo gone (every other repo linked in unchanged)."""
    hf_home = root / "hf"
    (hf_home / "hub").mkdir(parents=True)
    for repo in (hub_replica["hf_home"] / "hub").iterdir():
        if repo.name != "models--" + repo_id.replace("/", "--"):
            (hf_home / "hub" / repo.name).symlink_to(repo, target_is_directory=True)
    return {**hub_replica, "hf_home": hf_home}


def test_a_gated_repo_without_a_token_says_so_plainly_at_startup(hub_replica, tmp_path):
    """SD3.5 Medium is gated: with the hub refusing it and no HF_TOKEN, the flow role fails with what to do (accept
    the licence, set HF_TOKEN) on the page, and every other role of the full profile still loads."""
    replica = replica_without(hub_replica, SD35_REPO_ID, tmp_path)
    statuses, page = preload_in_subprocess(replica_env(replica), GATED, drop=("HF_TOKEN",), lines=2)
    ok, message = statuses["flow"]
    assert not ok
    assert f"'flow' model '{SD35_REPO_ID}' is a gated repository" in message and "no access token" in message
    assert "set it as HF_TOKEN" in message and f"https://huggingface.co/{SD35_REPO_ID}" in message
    assert f"Not available: `flow`: {message}" in page
    assert all(ok for role, (ok, _) in statuses.items() if role != "flow"), statuses
    # Without the simulated refusal, the missing repo is reported as missing, not as gated: the message above
    # comes from the hub's answer, not from the repo's absence.
    statuses = preload_in_subprocess(replica_env(replica), drop=("HF_TOKEN",))
    assert not statuses["flow"][0] and "gated" not in statuses["flow"][1]


def test_the_space_preload_list_is_enough_in_fp16(tmp_path, hub_replica):
    """A replica holding only the files README's preload_from_hub lists (fp16 variants, configs) loads in fp16."""
    space_only = build_hub_replica(tmp_path, space_files_only=True, adm=False)
    weights = {f"{p.parent.name}/{p.name}" for p in space_only["hf_home"].rglob("*.safetensors")}
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in weights  # only the fp16 files where a repo has them
    assert "unet/diffusion_pytorch_model.safetensors" not in weights

    def files(repo_id: str) -> set[str]:
        snapshot = next((space_only["hf_home"] / "hub" / ("models--" + repo_id.replace("/", "--")) / "snapshots")
                        .iterdir())
        return {str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file()}

    sd35 = files(SD35_REPO_ID)  # fp16 variants for the text encoders only; transformer and VAE as released
    assert {"text_encoder/model.fp16.safetensors", "text_encoder_3/model.fp16-00002-of-00002.safetensors",
            "transformer/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"} <= sd35
    assert "text_encoder/model.safetensors" not in sd35 and not any(".fp16." in f for f in sd35
                                                                       if f.startswith(("transformer/", "vae/")))
    pixart = files(PIXART_TRANSFORMER_REPO) | files(PIXART_BASE_REPO)  # no variants: the float32 files
    assert "text_encoder/model-00001-of-00002.safetensors" in pixart and not any(".fp16." in f for f in pixart)
    assert "tokenizer/spiece.model" in pixart and "tokenizer/tokenizer.json" not in pixart  # as released
    statuses = preload_in_subprocess(replica_env({**space_only, "adm_cache": hub_replica["adm_cache"]},
                                                 CONDLAB_DTYPE="float16"))
    failed = {role: message for role, (ok, message) in statuses.items() if not ok}
    assert not failed, failed
    assert set(statuses) == FULL_ROLES


def test_the_new_repos_sit_at_their_pinned_revisions(hub_replica):
    """PixArt-Σ's two repos and SD3.5 Medium are pinned to commits: their snapshots are those commits, and the
    full profile asks for exactly them."""
    from models.profiles import load_profile

    full = load_profile("full")
    pinned = {PIXART_TRANSFORMER_REPO: full.options("pixart")["revision"],
              PIXART_BASE_REPO: full.options("pixart")["base_revision"], SD35_REPO_ID: full.options("flow")["revision"]}
    assert pinned[SD35_REPO_ID] == SD35_REVISION and full.options("pixart")["base"] == PIXART_BASE_REPO
    for repo_id, revision in pinned.items():
        assert REPOS[repo_id].revision == revision
        snapshots = hub_replica["hf_home"] / "hub" / ("models--" + repo_id.replace("/", "--")) / "snapshots"
        assert [p.name for p in snapshots.iterdir()] == [revision]


def test_readme_front_matter_lists_what_the_replica_holds(hub_replica):
    text = (ROOT / "README.md").read_text()
    head = text.split("---", 2)[1]
    assert front_matter(hub_replica["hf_home"]) in head, "python -m testing.hub_replica --front-matter"
    assert all(f"  - {repo_id} " in head.split("preload_from_hub:")[1] for repo_id in REPOS)  # every repo preloaded


def test_the_dit_repo_is_bin_only_at_its_pinned_commit(hub_replica):
    from testing.hub_replica import DIT_REVISION

    snapshot = hub_replica["hf_home"] / "hub" / "models--facebook--DiT-XL-2-256" / "snapshots" / DIT_REVISION
    assert (snapshot / "model_index.json").is_file()
    files = {str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file()}
    assert {"transformer/diffusion_pytorch_model.bin", "vae/diffusion_pytorch_model.bin"} <= files
    assert not any(f.endswith(".safetensors") for f in files)


def test_the_variations_repo_is_bin_only_at_v2_0(hub_replica):
    repo = hub_replica["hf_home"] / "hub" / "models--lambdalabs--sd-image-variations-diffusers"
    assert (repo / "refs" / "v2.0").is_file() and not (repo / "refs" / "main").exists()
    files = [p.name for p in repo.rglob("*") if p.is_file()]
    assert "diffusion_pytorch_model.bin" in files and not any(f.endswith(".safetensors") for f in files)


@pytest.fixture(scope="module")
def full_app(hub_replica):
    with live_app("full", env=replica_env(hub_replica)) as client:
        yield client


def _images(value) -> list[np.ndarray]:
    if isinstance(value, str) and value.endswith(".png"):
        return [np.asarray(Image.open(value))]
    if isinstance(value, dict) and isinstance(value.get("image"), str):
        return _images(value["image"])
    if isinstance(value, list | tuple):
        return [a for v in value for a in _images(v)]
    return []


@pytest.mark.parametrize("api,request_", [
    ("/text_to_image", dict(prompt="a red cat", steps=2, seed=1, attention_token="red", **SIZE)),
    ("/guidance_sweep", dict(prompt="a red cat", scales="1, 5", steps=2, seed=1, **SIZE)),
    ("/controlnet", dict(image=PHOTO, control="canny", prompt="a cat", steps=2, seed=1, **SIZE)),
    ("/controlnet", dict(image=PHOTO, control="depth", preprocess_resolution=64, prompt="a cat", steps=2, **SIZE)),
    ("/controlnet", dict(image=PHOTO, control="pose", preprocess_resolution=64, prompt="a cat", steps=2, **SIZE)),
    ("/controlnet_multi", dict(image=PHOTO, control_a="canny", control_b="depth", preprocess_resolution=64,
                               prompt="a cat", steps=2, **SIZE)),
    ("/zero_conv", dict(seed=0, latent_size=2)),
    ("/image_conditioning", dict(image=CAT, mode="variations", steps=2, **SIZE)),
    ("/image_conditioning", dict(image=CAT, mode="ip-adapter", prompt="a cat", steps=2, **SIZE)),
    ("/image_conditioning", dict(image=CAT, mode="cross-modal", prompt="a dog", mix=0.5, steps=2, **SIZE)),
    ("/text_to_image", dict(prompt="a red cat", model="pixart", steps=2, seed=1, **SIZE)),
    ("/text_to_image", dict(prompt="a red cat", model="flow", steps=2, seed=1, **SIZE)),
    ("/text_to_image", dict(prompt="a red cat", model="flow", guidance="cfg-zero-star", scale=4.5, steps=2, seed=1,
                            **SIZE)),
    ("/guidance_sweep", dict(prompt="a red cat", model="pixart", scales="1, 4.5", steps=2, seed=1, **SIZE)),
    ("/attention_cost", dict(model="flow", resolutions="32, 64", measure=False)),
    ("/classifier_guidance", dict(class_name="golden retriever", model="64x64", steps="ddim2", seed=1)),
    ("/playground", dict(steps=5, num_samples=100)),
    ("/class_cfg", dict(class_name="golden retriever", steps=2, seed=1)),
    ("/cg_vs_cfg", dict(class_name="volcano", steps=2, seed=1, num_images=1)),
], ids=lambda v: v if isinstance(v, str) else v.get("mode") or v.get("control") or v.get("guidance")
    or v.get("model") or "")
def test_every_tab_of_the_full_profile_runs_on_the_replica(full_app, api, request_):
    request = {k: handle_file(v) if k == "image" else v for k, v in request_.items()}
    result = full_app.predict(**request, api_name=api)
    if api == "/zero_conv":  # a measurement, not an image
        assert result[0]["bit_identical"]
        return
    assert _images(result), result
    metadata = next((v for v in result if isinstance(v, dict) and "parameters" in v), None)
    if metadata is not None:
        assert metadata["runtime"] == "cpu float32" and "/tmp/" not in json.dumps(metadata)
        if request_.get("model") in ROLE_REPOS:  # the chosen role drew (or was counted), named by its hub repo
            assert metadata["model"] == request_["model"]
            assert metadata["model_id"].startswith(ROLE_REPOS[request_["model"]])


def test_full_profile_previews_come_through_taesd(full_app):
    job = full_app.submit(prompt="a red cat", steps=8, seed=1, api_name="/text_to_image", **SIZE)
    outputs = list(job)
    previews, final = outputs[:-1], outputs[-1]
    assert len(previews) >= 2 and all(p[0][0]["caption"].startswith("x̂0 at step") for p in previews)
    assert Image.open(previews[0][0][0]["image"]).size == (32, 32)  # TAESD decodes to the full size
    assert "TAESD" in final[2]["diagnostics_measured_on"]


@pytest.fixture(scope="module")
def app_without_preview_model(hub_replica, tmp_path_factory):
    """The replica with TAESD's repo gone (every other repo linked in unchanged): the preview role cannot load."""
    hf_home = tmp_path_factory.mktemp("no_taesd") / "hf"
    (hf_home / "hub").mkdir(parents=True)
    for repo in (hub_replica["hf_home"] / "hub").iterdir():
        if repo.name != "models--madebyollin--taesd":
            (hf_home / "hub" / repo.name).symlink_to(repo, target_is_directory=True)
    with live_app("full", env=replica_env({**hub_replica, "hf_home": hf_home})) as client:
        yield client


@pytest.mark.parametrize("api,request_", [
    ("/text_to_image", dict(prompt="a red cat", steps=4, seed=1, **SIZE)),
    ("/guidance_sweep", dict(prompt="a red cat", scales="1, 5", steps=4, seed=1, **SIZE)),
    ("/controlnet", dict(image=PHOTO, control="canny", prompt="a cat", steps=4, seed=1, **SIZE)),
    ("/controlnet_multi", dict(image=PHOTO, control_a="canny", control_b="canny", prompt="a cat", steps=4, **SIZE)),
    ("/image_conditioning", dict(image=CAT, mode="variations", steps=4, **SIZE)),
    ("/image_conditioning", dict(image=CAT, mode="ip-adapter", prompt="a cat", steps=4, **SIZE)),
], ids=lambda v: v if isinstance(v, str) else v.get("mode") or "")
def test_a_missing_preview_model_never_blocks_generation(app_without_preview_model, api, request_):
    """Every full-profile SD tab still answers; its previews and diagnostics come from the linear latent map, and
    the metadata says which preview stood in and why."""
    request = {k: handle_file(v) if k == "image" else v for k, v in request_.items()}
    outputs = list(app_without_preview_model.submit(**request, api_name=api))
    final = outputs[-1]
    assert _images(final), final
    metadata = next(v for v in final if isinstance(v, dict) and "diagnostics_measured_on" in v)
    assert metadata["diagnostics_measured_on"].startswith("x̂0 latents through a fitted linear latent→RGB map")
    assert "preview_vae could not be loaded" in metadata["diagnostics_measured_on"]
    assert len(outputs) >= 3, "x̂0 previews still stream (through the linear map)"
