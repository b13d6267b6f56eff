"""One profile in which every tab has a (tiny, random) model: for browser, bad-input and concurrency tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from golden import GOLDEN_ADM


def write_everything_profile(root: Path, tiny_sd_folder: Path) -> Path:
    """Tiny SD, two tiny ControlNets, tiny image-variation/CLIP/IP-Adapter folders and the golden ADM pair."""
    from test_classifier_guidance import write_tiny_profile

    from models.loading.sd import load_sd
    from models.runtime import pick_runtime
    from testing.tiny import build_tiny_controlnet, build_tiny_dit, build_tiny_image_models, build_tiny_ip_adapter

    root = Path(root)
    canny = build_tiny_controlnet(root / "canny", tiny_sd_folder, seed=1)
    depth = build_tiny_controlnet(root / "depth", tiny_sd_folder, seed=2)
    image = build_tiny_image_models(root / "image")
    ipa = build_tiny_ip_adapter(root / "IP-Adapter", load_sd(str(tiny_sd_folder), pick_runtime("cpu", "float32")).unet)
    dit = build_tiny_dit(root / "dit")
    adm_roles = ""
    if GOLDEN_ADM.is_dir():
        adm_text = write_tiny_profile(root).read_text()
        adm_roles = "".join(line + "\n" for line in adm_text.splitlines() if line.startswith("adm_"))
    path = root / "everything.toml"
    path.write_text(
        f'sd = "{tiny_sd_folder}"\n'
        f'controlnet_canny = "{canny}"\ncontrolnet_depth = "{depth}"\nannotators = "{root / "no_annotators"}"\n'
        f'image_variations = "{image["variations"]}"\nclip = "{image["clip"]}"\n'
        f'ip_adapter = {{ source = "{ipa}", subfolder = "models" }}\n'
        f'dit = "{dit}"\n'
        f"{adm_roles}"
        '\n[meta]\ndescription = "tiny random models for every tab (tests)"\n'
        "\n[limits]\nmax_pixels = 4096\nmax_steps = 10\nmax_images = 2\nmax_upload_pixels = 1000000\ntimeout_s = 60\n"
    )
    return path


def write_profile_with_student(everything_profile, tiny_sd_folder, root: Path) -> Path:
    """The every-tab tiny profile plus a distilled student of its tiny SD (as ``scripts/train/toy_distill.py`` starts
    one: the teacher's weights and a w embedding that adds nothing yet), so /distill_compare has a model to draw."""
    import torch
    from diffusers import UNet2DConditionModel

    from scripts.train.toy_distill import EMBEDDING_SCALE, W_MAX, W_MIN, build_student

    student = root / "distilled"
    shutil.copytree(tiny_sd_folder, student)
    teacher = UNet2DConditionModel.from_pretrained(tiny_sd_folder, subfolder="unet", torch_dtype=torch.float32)
    shutil.rmtree(student / "unet")
    build_student(teacher).save_pretrained(student / "unet")
    (student / "guidance.json").write_text(json.dumps({"w_min": W_MIN, "w_max": W_MAX,
                                                       "embedding_scale": EMBEDDING_SCALE, "teacher": "sd"}))
    text = Path(everything_profile).read_text()
    path = root / "with_student.toml"
    path.write_text(text.replace("\n[meta]", f'\ndistilled = "{student}"\n\n[meta]', 1))
    return path
