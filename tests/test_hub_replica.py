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


def preload_in_subprocess(env: dict[str, str]) -> dict:
    """The Space's startup loading (models/loading/preload.py) in a fresh process: huggingface_hub reads HF_HOME at
    import."""
    proc = subprocess.run([sys.executable, "-c", PRELOAD], cwd=ROOT, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_role_of_the_full_profile_loads_from_the_replica(hub_replica):
    statuses = preload_in_subprocess(replica_env(hub_replica))
    assert set(statuses) == {"sd", "controlnet_canny", "controlnet_depth", "controlnet_pose", "annotators",
                             "image_variations", "ip_adapter", "clip", "adm_diffusion", "preview_vae", "dit"}
    failed = {role: message for role, (ok, message) in statuses.items() if not ok}
    assert not failed, failed


def test_the_space_preload_list_is_enough_in_fp16(tmp_path, hub_replica):
    """A replica holding only the files README's preload_from_hub lists (fp16 variants, configs) loads in fp16."""
    space_only = build_hub_replica(tmp_path, space_files_only=True, adm=False)
    weights = {f"{p.parent.name}/{p.name}" for p in space_only["hf_home"].rglob("*.safetensors")}
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in weights  # only the fp16 files where a repo has them
    assert "unet/diffusion_pytorch_model.safetensors" not in weights
    statuses = preload_in_subprocess(replica_env({**space_only, "adm_cache": hub_replica["adm_cache"]},
                                                 CONDLAB_DTYPE="float16"))
    failed = {role: message for role, (ok, message) in statuses.items() if not ok}
    assert not failed, failed


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
    ("/classifier_guidance", dict(class_name="golden retriever", model="64x64", steps="ddim2", seed=1)),
    ("/playground", dict(steps=5, num_samples=100)),
    ("/class_cfg", dict(class_name="golden retriever", steps=2, seed=1)),
    ("/cg_vs_cfg", dict(class_name="volcano", steps=2, seed=1, num_images=1)),
], ids=lambda v: v if isinstance(v, str) else v.get("mode") or v.get("control") or "")
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
