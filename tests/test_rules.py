"""Guidance rules: equal to diffusers where diffusers has them, and their stated properties."""

import pytest
import torch
from diffusers.guiders import ClassifierFreeGuidance
from diffusers.guiders.adaptive_projected_guidance import normalized_guidance
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

from guidance.parameterization import eps_to_x0, x0_to_eps
from guidance.rules import GuidanceRule, cfg, guidance_norms, guide, perp_cfg, rescale, split_guidance

SHAPES = [(3, 4, 8, 8), (2, 2), (4, 3, 5), (1, 4, 16, 16)]
DTYPES = [(torch.float32, 1e-5), (torch.float16, 2e-2), (torch.bfloat16, 1e-1)]


def pair(shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(dtype), torch.randn(shape, generator=g).to(dtype)


@pytest.mark.parametrize("scale", [0.0, 3.0, 7.5, 15.0])
def test_cfg_equals_diffusers(scale):
    u, c = pair((2, 4, 8, 8))
    expected = ClassifierFreeGuidance(guidance_scale=scale).forward(c, u).pred
    assert torch.equal(cfg(u, c, scale), expected)


@pytest.mark.parametrize("phi", [0.3, 0.7, 1.0])
def test_rescale_equals_diffusers(phi):
    u, c = pair((2, 4, 8, 8), seed=1)
    guided = cfg(u, c, 9.0)
    assert torch.equal(rescale(guided, c, phi), rescale_noise_cfg(guided, c, guidance_rescale=phi))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("scale,eta", [(2.0, 0.0), (7.5, 0.3), (12.0, 1.0)])
def test_perp_cfg_cond_basis_equals_apg(shape, scale, eta):
    u, c = pair(shape, seed=2)
    expected = normalized_guidance(c, u, scale - 1, eta=eta, use_original_formulation=True)
    assert (perp_cfg(u, c, scale, eta=eta, basis="cond") - expected).abs().max().item() <= 1e-6


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("basis", ["uncond", "cond"])
def test_perp_cfg_properties(shape, dtype, tol, basis):
    u, c = pair(shape, dtype, seed=3)
    # w = 1 gives the conditional prediction.
    assert torch.allclose(perp_cfg(u, c, 1.0, eta=0.4, basis=basis).float(), c.float(), atol=tol)
    # eta = 1 gives CFG.
    assert torch.allclose(perp_cfg(u, c, 6.0, eta=1.0, basis=basis).float(), cfg(u, c, 6.0).float(), atol=tol * 10)
    # eta = 0: the update is orthogonal to the basis, per sample.
    update = (perp_cfg(u, c, 6.0, eta=0.0, basis=basis).double() - c.double()).flatten(1)
    b = (u if basis == "uncond" else c).double().flatten(1)
    cos = (update * b).sum(1) / (update.norm(dim=1) * b.norm(dim=1))
    assert cos.abs().max().item() < (1e-6 if dtype == torch.float32 else 0.05)
    # Without the projection the update is not orthogonal, so the check above can fail.
    plain = (cfg(u, c, 6.0).double() - c.double()).flatten(1)
    assert ((plain * b).sum(1) / (plain.norm(dim=1) * b.norm(dim=1))).abs().max().item() > 0.05


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_zero_basis_is_safe(dtype):
    c = torch.randn(2, 4, 4, 4).to(dtype)
    u = torch.zeros_like(c)
    out = perp_cfg(u, c, 5.0, basis="uncond")
    assert torch.isfinite(out.float()).all()
    # No direction to project out: all of Δ is perpendicular, so the result is CFG.
    assert torch.allclose(out.float(), cfg(u, c, 5.0).float(), atol=1e-2)
    par, perp = guidance_norms(u, c, "uncond")
    assert torch.equal(par, torch.zeros(2))


def test_split_is_per_sample():
    u, c = pair((3, 2, 4, 4), seed=4)
    par, perp = split_guidance(u, c, "uncond")
    assert torch.allclose(par + perp, c - u, atol=1e-6)
    par0, _ = split_guidance(u[:1], c[:1], "uncond")
    assert torch.allclose(par[:1], par0, atol=1e-7)


def test_norms_shape_and_values():
    u, c = pair((3, 4, 8, 8), seed=5)
    par, perp = guidance_norms(u, c, "cond")
    delta = (c - u).flatten(1).norm(dim=1)
    assert par.shape == perp.shape == (3,)
    assert torch.allclose(par**2 + perp**2, delta**2, rtol=1e-4)


def test_rules_by_name_and_space():
    u, c = pair((2, 4, 8, 8), seed=6)
    x = torch.randn(2, 4, 8, 8)
    ab = torch.tensor(0.3)
    assert torch.equal(guide(u, c, GuidanceRule("none", 7.0)), c)
    assert torch.equal(guide(u, c, GuidanceRule("cfg", 7.0)), cfg(u, c, 7.0))
    # CFG is linear, so the x0 space gives the same epsilon ...
    assert torch.allclose(guide(u, c, GuidanceRule("cfg", 7.0, space="x0"), x_t=x, alpha_bar=ab), cfg(u, c, 7.0),
                          atol=1e-4)
    # ... but the projection is not: Perp-CFG in x0 projects out a different direction.
    in_x0 = guide(u, c, GuidanceRule("perp-cfg", 7.0, space="x0"), x_t=x, alpha_bar=ab)
    assert (in_x0 - perp_cfg(u, c, 7.0)).abs().max() > 1e-3
    expected = x0_to_eps(perp_cfg(eps_to_x0(u, x, ab), eps_to_x0(c, x, ab), 7.0), x, ab)
    assert torch.allclose(in_x0, expected, atol=1e-5)
    rescaled = guide(u, c, GuidanceRule("perp-cfg", 7.0, eta=0.5, rescale=0.7))
    assert torch.allclose(rescaled, rescale(perp_cfg(u, c, 7.0, eta=0.5), c, 0.7))


@pytest.mark.parametrize(
    "kwargs", [dict(name="cfgg"), dict(scale=float("nan")), dict(scale=-1.0), dict(eta=2.0), dict(rescale=1.5),
               dict(basis="x"), dict(space="v")],
)
def test_bad_parameters_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        GuidanceRule(**kwargs)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_prediction_type_conversions_round_trip_and_match_diffusers(kind):
    from diffusers import DDPMScheduler

    from guidance.parameterization import from_eps, to_eps

    sched = DDPMScheduler(beta_schedule="linear")
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1, torch.randn(2, 3, 8, 8, generator=g)
    for t in (0, 500, 999):
        a = sched.alphas_cumprod[t]
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
        native = {"epsilon": eps, "sample": x0,
                  "v_prediction": sched.get_velocity(x0, eps, torch.tensor([t, t]))}[kind]
        assert torch.allclose(to_eps(native, x_t, a, kind), eps, atol=1e-4)
        # Near t = T the inverse of v divides by √ᾱ ≈ 0.006: float32 still keeps it to ~1e-4.
        assert torch.allclose(from_eps(to_eps(native, x_t, a, kind), x_t, a, kind), native, atol=1e-4)
    with pytest.raises(ValueError, match="prediction_type"):
        to_eps(eps, eps, 0.5, "flow")
