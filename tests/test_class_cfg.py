"""``/class_cfg`` and ``/cg_vs_cfg``: class-conditional CFG on a DiT through the one loop, against diffusers'
``DiTPipeline`` on tiny random DiTs saved in its layout, and the side-by-side comparison with classifier guidance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, DiTPipeline

from guidance.rules import GuidanceRule
from models.loading.dit import DiTComponents, load_dit
from models.profiles import Profile, load_profile
from models.runtime import pick_runtime
from pipelines.class_cfg import class_cfg_sample
from tasks.class_cfg import CLASS_CFG
from tasks.guidance_compare import CG_VS_CFG
from testing.tiny import build_tiny_dit

CPU = pick_runtime("cpu", "float32")


def profile_for(folder, name: str = "dit-test") -> Profile:
    return Profile(name, None, roles={"dit": {"source": str(folder)}})


@pytest.fixture(scope="module")
def tiny_dit_folder(tmp_path_factory):
    return build_tiny_dit(tmp_path_factory.mktemp("dit") / "DiT-XL-2-256")


@pytest.fixture(scope="module")
def tiny_dit(tiny_dit_folder):
    return load_dit(profile_for(tiny_dit_folder), CPU)


@pytest.fixture(scope="module")
def reference(tiny_dit_folder):
    return DiTPipeline.from_pretrained(tiny_dit_folder)


def reference_images(pipe: DiTPipeline, class_id: int, scale: float, steps: int, seed: int, output_type: str = "pt"):
    return pipe(class_labels=[class_id], guidance_scale=scale, num_inference_steps=steps,
                generator=torch.manual_seed(seed), output_type=output_type).images


@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_cfg_equals_dit_pipeline(tiny_dit, reference, scale):
    ours = class_cfg_sample(tiny_dit, class_id=207, rule=GuidanceRule("cfg", scale), steps=8, seed=3).images
    theirs = reference_images(reference, 207, scale, 8, 3)
    assert (ours - theirs).abs().max().item() <= 1e-5


def test_the_comparison_with_dit_pipeline_can_fail(tiny_dit, reference, monkeypatch):
    """The same comparison sees a wrong scale, a wrong class and a wrong null label."""
    theirs = reference_images(reference, 207, 4.0, 8, 3)
    wrong_scale = class_cfg_sample(tiny_dit, class_id=207, rule=GuidanceRule("cfg", 3.0), steps=8, seed=3).images
    wrong_class = class_cfg_sample(tiny_dit, class_id=208, rule=GuidanceRule("cfg", 4.0), steps=8, seed=3).images
    assert (wrong_scale - theirs).abs().max().item() > 1e-3
    assert (wrong_class - theirs).abs().max().item() > 1e-3
    monkeypatch.setattr(DiTComponents, "null_class", property(lambda self: 0))  # class 0 as the "null" label
    wrong_null = class_cfg_sample(tiny_dit, class_id=207, rule=GuidanceRule("cfg", 4.0), steps=8, seed=3).images
    assert (wrong_null - theirs).abs().max().item() > 1e-3


def test_endpoint_png_matches_dit_pipeline_within_one_level(tiny_dit_folder, reference):
    samples, _, metadata, _, _ = CLASS_CFG(profile_for(tiny_dit_folder), class_name="golden retriever", guidance="cfg",
                                        scale=4.0, steps=8, seed=3).values(CLASS_CFG.spec)
    ours = np.asarray(samples[0][0].convert("RGB"), dtype=np.int16)
    theirs = np.asarray(reference_images(reference, 207, 4.0, 8, 3, "pil")[0], dtype=np.int16)
    assert np.abs(ours - theirs).max() <= 1
    assert metadata["scheduler_used"] == "ddim" and metadata["null_class"] == 1000 and metadata["learned_sigma"]


def test_learned_variance_is_read_by_ddpm_and_dropped_by_ddim(tiny_dit):
    """DDPM takes the variance channels as ADM's learned range (Nichol & Dhariwal); changing them changes the
    sample. DDIM drops them as DiTPipeline does, so the same change leaves its sample alone."""

    def run(scheduler: str, variance_offset: float) -> torch.Tensor:
        original = tiny_dit.transformer.forward

        def shifted(*args, **kwargs):
            out = original(*args, **kwargs)
            sample = out[0] if isinstance(out, tuple) else out.sample
            sample = sample.clone()
            sample[:, tiny_dit.latent_channels:] += variance_offset
            return (sample,)

        tiny_dit.transformer.forward = shifted
        try:
            return class_cfg_sample(tiny_dit, class_id=1, rule=GuidanceRule("cfg", 2.0), steps=6, seed=0,
                                    scheduler=scheduler).images
        finally:
            del tiny_dit.transformer.forward

    assert (run("ddpm", 0.0) - run("ddpm", 0.5)).abs().max() > 1e-3
    assert (run("ddim", 0.0) - run("ddim", 0.5)).abs().max() == 0
    assert isinstance(DDPMScheduler.from_config(tiny_dit.scheduler_config, variance_type="learned_range"),
                      DDPMScheduler)


def test_a_folder_without_id2label_samples_by_id_and_says_so(tmp_path):
    folder = build_tiny_dit(tmp_path / "no_labels", num_classes=10, latent=False, learned_sigma=False)
    index = json.loads((folder / "model_index.json").read_text())
    del index["id2label"]
    (folder / "model_index.json").write_text(json.dumps(index))
    profile = profile_for(folder, "no-labels")
    with pytest.raises(ValueError, match="no id2label.*class_id"):
        CLASS_CFG(profile, class_name="golden retriever", steps=2)
    result = CLASS_CFG(profile, class_id=3, steps=2)
    samples, _, metadata, _, _ = result.values(CLASS_CFG.spec)
    assert samples[0][1].startswith("class 3") and any("no id2label" in n for n in metadata["notes"])
    with pytest.raises(ValueError, match="class_id"):
        CLASS_CFG(profile, class_id=10, steps=2)


def test_unknown_imagenet_names_get_the_closest_suggestions(tiny_dit_folder):
    with pytest.raises(ValueError, match="Did you mean.*golden retriever"):
        CLASS_CFG(profile_for(tiny_dit_folder), class_name="golden retreiver", steps=2)


def test_rules_without_a_second_model_only(tiny_dit_folder):
    profile = profile_for(tiny_dit_folder)
    with pytest.raises(ValueError, match="guidance must be one of"):
        CLASS_CFG(profile, guidance="autoguidance", steps=2)
    with pytest.raises(ValueError, match="latent space"):
        CLASS_CFG(profile, clip_sample="unclipped-eps", scheduler="ddim", steps=2)
    for rule in ("perp-cfg", "apg", "cfg-zero-star", "tcfg"):
        samples = CLASS_CFG(profile, guidance=rule, scale=3.0, steps=3).values(CLASS_CFG.spec)[0]
        assert len(samples) == 1


@pytest.fixture(scope="module")
def toy():
    return load_profile("toy")


def test_toy_dit_ships_small_safetensors_in_the_pipeline_layout(toy):
    folder = toy.source("dit")
    files = [p for p in Path(folder).rglob("*") if p.is_file()]
    weights = [p for p in files if p.suffix in (".safetensors", ".bin", ".pt")]
    assert weights and all(p.suffix == ".safetensors" for p in weights)
    assert all(p.stat().st_size < 8 * 2**20 for p in files)
    index = json.loads((Path(folder) / "model_index.json").read_text())
    assert index["_class_name"] == "DiTPipeline" and len(index["id2label"]) == 24
    config = json.loads((Path(folder) / "transformer" / "config.json").read_text())
    assert config["norm_type"] == "ada_norm_zero" and config["num_embeds_ada_norm"] == 24


def test_side_by_side_counts_what_each_method_costs(toy):
    samples, plot, table, metadata = CG_VS_CFG(toy, class_name="blue square", classifier_scale=10.0, cfg_scale=4.0,
                                               steps=4, seed=0, num_images=1).values(CG_VS_CFG.spec)
    assert len(samples) == 2 and "backward passes" in table
    # the plot's data: the same classifier's log p per step, a mean series for each method
    assert set(plot.columns) == {"step", "value", "series"}
    assert {"classifier guidance: mean", "CFG (DiT): mean"} <= set(plot["series"])
    assert plot["step"].max() == 3
    costs = {c["method"]: c for c in metadata["costs"]}
    assert costs["classifier guidance"]["backward_passes_per_step"] == 1
    assert costs["classifier guidance"]["model_rows_per_step"] == 1
    assert costs["CFG"]["backward_passes_per_step"] == 0 and costs["CFG"]["model_rows_per_step"] == 2
    assert metadata["yardstick"] == "x_t"
    assert all(len(v) == 1 for v in metadata["final_log_p"].values())


def test_imagenet_side_by_side_refuses_step_counts_adm_ddim_cannot_take():
    """ADM's "ddimN" keeps range(0, 1000, k): 1 or 99 steps exist for the DiT but not for ADM."""
    endpoint = CG_VS_CFG.spec.bind(load_profile("full"))
    for steps, hint in ((1, "try steps = 2 or 3"), (99, "try steps = 91 or 100")):
        with pytest.raises(ValueError, match=hint):
            endpoint.parse(dict(class_name="volcano", steps=steps))
    assert endpoint.parse(dict(class_name="volcano", steps=25)).steps == 25


def test_a_missing_dit_folder_names_the_role_not_a_pixel_limit(tmp_path):
    """A local folder that is not there must not be mistaken for the 256² hub DiT (CI once saw exactly that)."""
    toml = tmp_path / "missing.toml"
    toml.write_text(f'dit = "{tmp_path / "no_dit_here"}"\n[limits]\nmax_pixels = 16384\n')
    with pytest.raises(ValueError, match="The 'dit' model could not be loaded") as err:
        CLASS_CFG(load_profile(str(toml)), class_id=0, steps=2)
    assert "pixels per image" not in str(err.value)
