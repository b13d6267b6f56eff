"""ADM (guided-diffusion) networks, schedules and classifier guidance against the golden reference data.

The golden folder holds derived data produced by the upstream code (see its README): state-dict
manifests of every released checkpoint, float64 schedules, tiny random checkpoints with their
outputs, and one classifier-guided step. Sampling always goes through ``guidance.sampler.sample``.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from golden import GOLDEN_ADM, golden_adm_mark

from guidance.rules import GuidanceRule
from guidance.sampler import ClassifierContext, ClassifierGuidance, classifier_gradient, sample
from models.adapters.adm_sampling import ADMClassifierLogProb, ADMDenoiser, adm_sampling_setup
from models.adapters.adm_schedule import (
    ADMDDIMScheduler,
    ADMDDPMScheduler,
    make_adm_scheduler,
    make_schedule,
    space_timesteps,
)
from models.architectures.adm import create_classifier, create_model, load_adm_state_dict, to_runtime

GOLDEN = GOLDEN_ADM
pytestmark = golden_adm_mark()

MANIFESTS = json.loads((GOLDEN / "manifests.json").read_text())["models"] if GOLDEN.is_dir() else {}
# The tiny classifier departs from create_classifier's fixed layout (README: "overrides").
TINY_CLASSIFIER_OVERRIDES = dict(classifier_channel_mult="1,1,2", classifier_num_head_channels=32)




def close(a: torch.Tensor, ref: torch.Tensor, rel: float = 1e-5) -> float:
    """max|a − ref| / max|ref|, asserted ≤ ``rel`` (the golden README's tolerance)."""
    err = float((a.detach().double() - ref.double()).abs().max() / ref.double().abs().max())
    assert err <= rel, f"relative error {err:.3g} > {rel:g}"
    return err


def _load(name: str) -> dict:
    return torch.load(GOLDEN / f"{name}.pt", weights_only=True)


def _tiny(name: str) -> torch.nn.Module:
    meta = json.loads((GOLDEN / f"tiny_{name}.json").read_text())
    if name == "classifier":
        net = create_classifier(**meta["flags"], **TINY_CLASSIFIER_OVERRIDES)
    else:
        net = create_model(**meta["flags"])
    expected = {k: v for k, v in meta["constructor_kwargs"].items() if k != "class"}
    assert {k: net.init_kwargs[k] for k in expected} == expected
    return load_adm_state_dict(net, GOLDEN / f"tiny_{name}.pt").eval()


@pytest.fixture(scope="module")
def tiny_cond() -> torch.nn.Module:
    return _tiny("cond_diffusion")


@pytest.fixture(scope="module")
def tiny_classifier() -> torch.nn.Module:
    return _tiny("classifier")


# ----------------------------------------------------------------------------- architecture


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_manifest_state_dict_matches(name: str) -> None:
    entry = MANIFESTS[name]
    build = create_classifier if entry["kind"].startswith("noisy classifier") else create_model
    with torch.device("meta"):
        net = build(**entry["flags"])
    expected_kwargs = {k: v for k, v in entry["constructor_kwargs"].items() if k != "class"}
    assert {k: net.init_kwargs.get(k) for k in expected_kwargs} == expected_kwargs

    rows = entry["state_dict"]
    state = net.state_dict()
    assert list(state) == [r[0] for r in rows]  # same keys, same order
    for key, shape, dtype, _ in rows:
        assert list(state[key].shape) == shape, key
        assert str(state[key].dtype).removeprefix("torch.") == dtype, key
    assert sum(p.numel() for p in net.parameters()) == entry["num_params"]

    # The sampling-time fp16 conversion (on CUDA) touches exactly the tensors the originals cast.
    assert net.use_fp16 == entry["use_fp16_at_sampling"]
    if net.use_fp16:
        net.convert_to_fp16()
    runtime = net.state_dict()
    got = [str(runtime[key].dtype).removeprefix("torch.") for key, *_ in rows]
    assert got == [r[3] for r in rows]
    assert sum(d == "float16" for d in got) == entry["num_tensors_fp16_at_runtime"]


@pytest.mark.parametrize("name", ["cond_diffusion", "uncond_diffusion"])
def test_tiny_diffusion_outputs(name: str) -> None:
    net = _tiny(name)
    io = _load(f"tiny_{name}_io")
    with torch.no_grad():
        out = net(io["x"], io["t"], io.get("y"))
    close(out[:, :3], io["out"][:, :3])  # eps
    close(out[:, 3:], io["out"][:, 3:])  # variance interpolation v


def test_tiny_classifier_outputs(tiny_classifier: torch.nn.Module) -> None:
    io = _load("tiny_classifier_io")
    x = io["x"].clone().requires_grad_(True)
    logits = tiny_classifier(x, io["t"])
    log_p = torch.log_softmax(logits, dim=-1)[torch.arange(len(io["y"])), io["y"]]
    (grad,) = torch.autograd.grad(log_p.sum(), x)
    close(logits, io["out"])
    close(log_p, io["log_p"])
    close(grad, io["grad_log_p"])


def test_fp16_torso_close_to_fp32() -> None:
    net = _tiny("cond_diffusion")  # a private copy: the round trip through fp16 rounds the weights
    io = _load("tiny_cond_diffusion_io")
    assert to_runtime(net, "cpu").dtype == torch.float32  # CPU default: full precision
    with torch.no_grad():
        to_runtime(net, "cpu", dtype=torch.float16)
        assert net.dtype == torch.float16 and net.time_embed[0].weight.dtype == torch.float32
        out = net(io["x"], io["t"], io["y"])
    assert out.dtype == torch.float32
    close(out, io["out"], rel=1e-2)


# ----------------------------------------------------------------------------- flags and loading


def test_unknown_flags_rejected_and_sampling_flags_accepted() -> None:
    with pytest.raises(ValueError, match="num_chanels"):
        create_model(image_size=32, channel_mult="1,2", num_chanels=32)
    with pytest.raises(ValueError, match="classifier_widht"):
        create_classifier(image_size=32, channel_mult="1,2", classifier_widht=32)
    flags = dict(image_size=32, channel_mult="1,2", num_channels=32, num_res_blocks=1, attention_resolutions="16",
                 timestep_respacing="ddim25", noise_schedule="cosine", use_ddim=True, classifier_scale=3.0)
    with torch.device("meta"):
        assert create_model(**flags).init_kwargs["channel_mult"] == [1, 2]
        # classifier_sample.py parses model and classifier flags into one namespace: both builders take it.
        model_flags, clf_flags = MANIFESTS["64x64_diffusion"]["flags"], MANIFESTS["64x64_classifier"]["flags"]
        union = {**model_flags, **clf_flags, "classifier_scale": 1.0, "use_ddim": False, "clip_denoised": True}
        assert create_model(**union).init_kwargs == create_model(**model_flags).init_kwargs
        assert create_classifier(**union).init_kwargs == create_classifier(**clf_flags).init_kwargs


def test_layout_validation() -> None:
    with pytest.raises(ValueError, match="no default channel_mult"):
        create_model(image_size=32)
    with pytest.raises(ValueError, match="not divisible"):
        create_model(image_size=36, channel_mult="1,2,2,2")  # three halvings need a multiple of 8


def test_project_toy_classifier_layout() -> None:
    with torch.device("meta"):
        clf = create_classifier(image_size=32, channel_mult="1,2,2", num_classes=24, classifier_width=32,
                                classifier_depth=1, classifier_attention_resolutions="16,8",
                                classifier_num_head_channels=32)
    assert clf.init_kwargs["out_channels"] == 24 and clf.init_kwargs["attention_resolutions"] == [2, 4]
    assert clf.out[2].positional_embedding.shape == (64, 8 * 8 + 1)  # 32 · 2 channels at 8x8


def test_loader_formats_and_mismatch_report(tmp_path: Path, tiny_cond: torch.nn.Module) -> None:
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in tiny_cond.state_dict().items()}
    save_file(state, str(tmp_path / "m.safetensors"))
    meta = json.loads((GOLDEN / "tiny_cond_diffusion.json").read_text())
    with torch.device("meta"):
        fresh = create_model(**meta["flags"])
    load_adm_state_dict(fresh, tmp_path / "m.safetensors")  # materialises a meta-built model
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())

    broken = dict(state)
    broken.pop("out.2.bias")
    broken["extra.weight"] = torch.zeros(1)
    broken["label_emb.weight"] = torch.zeros(10, 128)
    torch.save(broken, tmp_path / "bad.pt")
    with pytest.raises(ValueError) as info:
        load_adm_state_dict(tiny_cond, tmp_path / "bad.pt")
    message = str(info.value)
    assert "missing: out.2.bias" in message and "unexpected: extra.weight" in message
    assert "label_emb.weight (10, 128) vs model (1000, 128)" in message


# ----------------------------------------------------------------------------- schedules


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_schedules_and_respacing(schedule: str) -> None:
    ref = json.loads((GOLDEN / "schedules.json").read_text())
    tables = [("", ref["base"][schedule])] + list(ref["respaced"][schedule].items())
    for respacing, expected in tables:
        got = make_schedule(schedule, 1000, respacing)
        if "use_timesteps" in expected:
            assert got.timestep_map.tolist() == expected["use_timesteps"], respacing
        for key in ("betas", "alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped"):
            np.testing.assert_allclose(getattr(got, key), expected[key], rtol=1e-12, atol=0,
                                       err_msg=f"{respacing} {key}")


def test_space_timesteps_sections() -> None:
    ref = json.loads((GOLDEN / "schedules.json").read_text())["extra_space_timesteps"]
    assert len(ref) == 2
    for call, expected in ref.items():
        total, sections = call.removeprefix("space_timesteps(").removesuffix(")").split(", ")
        assert sorted(space_timesteps(int(total), sections.strip("'"))) == expected, call
    assert sorted(space_timesteps(1000, "ddim25"))[:3] == [0, 40, 80]
    with pytest.raises(ValueError):
        space_timesteps(1000, "ddim400")  # strides 2 and 3 give 500 and 334 steps


def test_ancestral_step_agrees_with_diffusers_ddpm_away_from_t0() -> None:
    schedule = make_schedule("linear", 1000, "50")
    ours = make_adm_scheduler(schedule)
    theirs = DDPMScheduler(num_train_timesteps=50, trained_betas=schedule.betas.tolist(),
                           variance_type="learned_range", clip_sample=True)
    ours.set_timesteps(50)
    theirs.set_timesteps(50)
    g = torch.Generator().manual_seed(3)
    x, out = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 6, 8, 8, generator=g).clamp(-1, 1)
    for t in (40, 10):
        a = ours.step(out, t, x, generator=torch.Generator().manual_seed(t), return_dict=False)[0]
        b = theirs.step(out, t, x, generator=torch.Generator().manual_seed(t), return_dict=False)[0]
        close(a, b, rel=1e-4)


# ----------------------------------------------------------------------------- the guided step


class _OneStep:
    """Lets the loop take exactly one step at respaced index ``t`` of the full chain, and records it."""

    def __init__(self, inner: ADMDDPMScheduler | ADMDDIMScheduler, t: int):
        self.inner, self.t = inner, t
        self.init_noise_sigma = inner.init_noise_sigma
        self.alphas_cumprod = inner.alphas_cumprod
        self.seen: dict[str, torch.Tensor] = {}

    def set_timesteps(self, num_steps: int, device: torch.device | None = None) -> None:
        self.inner.set_timesteps(self.inner.config.num_train_timesteps, device=device)
        self.timesteps = torch.tensor([self.t])

    def scale_model_input(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.inner.scale_model_input(x, t)

    def step(self, model_output: torch.Tensor, t: torch.Tensor, x: torch.Tensor, **kwargs) -> tuple:
        kwargs["return_dict"] = False
        prev, x0 = self.inner.step(model_output, t, x, **kwargs)
        self.seen.update(model_output=model_output, pred_x0=x0)
        return prev, x0


def _one_guided_step(denoiser, x, guidance, step_noise: torch.Tensor, one: _OneStep) -> torch.Tensor:
    return sample(denoiser, one, x, GuidanceRule("none"), steps=1, classifier=guidance, eps_channels=3,
                  step_kwargs={"variance_noise": step_noise}, diagnostics=False).sample


@pytest.fixture(scope="module")
def guided() -> dict:
    return _load("tiny_guided_step")


def _step_parts(guided: dict, use_ddim: bool):
    """The golden step's chain: linear, respaced ddim25 (index 24 → timestep 960 for UNet and classifier)."""
    schedule = make_schedule("linear", 1000, "ddim25")
    assert schedule.timestep_map[guided["t"]].tolist() == guided["t_model"].tolist()
    scheduler = make_adm_scheduler(schedule, use_ddim=use_ddim)
    common = dict(timestep_map=schedule.timestep_map)
    return schedule, scheduler, common


def test_guided_ancestral_step(guided: dict, tiny_cond, tiny_classifier) -> None:
    schedule, scheduler, common = _step_parts(guided, use_ddim=False)
    scale = float(guided["classifier_scale"])
    with torch.no_grad():
        close(tiny_cond(guided["x_t"], guided["t_model"], guided["y"]), guided["model_output"])
    for i, t in enumerate(guided["t"].tolist()):
        x, y, noise = guided["x_t"][i : i + 1], guided["y"][i : i + 1], guided["noise"][i : i + 1]
        denoiser = ADMDenoiser(tiny_cond, y, alphas_cumprod=schedule.alphas_cumprod, **common)
        log_prob = ADMClassifierLogProb(tiny_classifier, y, **common)
        guidance = ClassifierGuidance(log_prob, scale, mode="mean", variance=scheduler.step_variance)
        run = partial(_one_guided_step, denoiser, x, guidance)
        one = _OneStep(scheduler, t)
        close(run(noise, one), guided["p_sample_sample"][i : i + 1])
        close(run(torch.zeros_like(noise), _OneStep(scheduler, t)), guided["guided_mean"][i : i + 1])
        close(one.seen["pred_x0"], guided["pred_xstart"][i : i + 1], rel=1e-4 if t == 24 else 1e-5)

        out = one.seen["model_output"]
        unguided_mean = scheduler.step(out, t, x, variance_noise=torch.zeros_like(noise), return_dict=False)[0]
        close(unguided_mean, guided["mean"][i : i + 1])
        close(scheduler.step_variance(t, out, x), guided["variance"][i : i + 1])
        close(scheduler.step_log_variance(t, out, x), guided["log_variance"][i : i + 1])
        ctx = ClassifierContext(scheduler.alphas_cumprod[t], out[:, :3], 0, 1)
        grad, _ = classifier_gradient(log_prob, x, torch.tensor(t), ctx)
        close(scale * grad, guided["cond_grad"][i : i + 1])


def test_guided_ddim_step(guided: dict, tiny_cond, tiny_classifier) -> None:
    schedule, scheduler, common = _step_parts(guided, use_ddim=True)
    assert isinstance(scheduler, ADMDDIMScheduler) and not scheduler.config.clip_sample
    scale = float(guided["classifier_scale"])
    for i, t in enumerate(guided["t"].tolist()):
        x, y = guided["x_t"][i : i + 1], guided["y"][i : i + 1]
        denoiser = ADMDenoiser(tiny_cond, y, alphas_cumprod=schedule.alphas_cumprod, **common)
        log_prob = ADMClassifierLogProb(tiny_classifier, y, **common)
        for s, key in ((scale, "ddim_guided_sample"), (0.0, "ddim_unguided_sample")):
            one = _OneStep(scheduler, t)
            out = sample(denoiser, one, x, GuidanceRule("none"), steps=1, eps_channels=3, diagnostics=False,
                         classifier=ClassifierGuidance(log_prob, s, mode="eps")).sample
            close(out, guided[key][i : i + 1])
            if s:
                # eps at t = 0 is ~244 by construction: compared per batch item (README).
                close(one.seen["model_output"][:, :3], guided["ddim_guided_eps"][i : i + 1])
                close(one.seen["pred_x0"], guided["ddim_guided_pred_xstart"][i : i + 1], rel=1e-4 if t == 24 else 1e-5)


# ----------------------------------------------------------------------------- sampling through the loop


def test_ddim_classifier_guidance_raises_target_log_prob(tiny_cond, tiny_classifier) -> None:
    y = torch.tensor([1, 7])
    final = {}
    for scale in (0.0, 100.0):
        setup = adm_sampling_setup(tiny_cond, tiny_classifier, y=y, classifier_scale=scale,
                                   timestep_respacing="ddim10", use_ddim=True)
        assert setup.num_steps == 10 and setup.scheduler.timesteps.numel() == 10
        generator = torch.Generator().manual_seed(0)
        noise = torch.randn(2, 3, 32, 32, generator=generator)
        result = setup.run(noise, generator=generator)
        assert result.series("log_prob").shape == (10, 2)
        assert result.sample.abs().max() <= 1.0 + 1e-3
        with torch.no_grad():
            final[scale] = setup.classifier.log_prob(result.sample, torch.tensor(0))
    gain = final[100.0] - final[0.0]
    assert (gain > 0).all(), f"guidance lowered log p(target): {gain.tolist()}"


def test_ancestral_setup_uses_learned_variance(tiny_cond, tiny_classifier) -> None:
    setup = adm_sampling_setup(tiny_cond, tiny_classifier, y=torch.tensor([3]), classifier_scale=2.0,
                               timestep_respacing="4", noise_schedule="cosine")
    assert isinstance(setup.scheduler, ADMDDPMScheduler)
    assert setup.scheduler.config.variance_type == "learned_range" and setup.scheduler.config.clip_sample
    assert setup.classifier.mode == "mean" and setup.classifier.variance == setup.scheduler.step_variance
    assert setup.schedule.timestep_map.tolist() == [0, 333, 666, 999]
    result = setup.run(torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)),
                       generator=torch.Generator().manual_seed(2))
    assert [row["t"] for row in result.trace] == [3.0, 2.0, 1.0, 0.0]
    assert torch.isfinite(result.sample).all()
