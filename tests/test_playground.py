"""The 2D playground's exact-score claims, checked with statistics on N = 2000 samples."""

import pytest
import torch

from models.architectures.gmm2d import default_mixture
from pipelines.playground import energy_distance, run_playground

N = 2000
STEPS = 250


def permutation_p_value(a: torch.Tensor, b: torch.Tensor, permutations: int = 200, seed: int = 0) -> float:
    """p-value of the energy-distance two-sample test (H0: same distribution).

    The threshold is the test's own null distribution: pooling both samples and splitting
    them at random gives the statistic's spread when the distributions are equal.
    """
    pooled = torch.cat([a, b]).double()
    d = torch.cdist(pooled, pooled)
    total = d.sum()
    n, m = a.shape[0], b.shape[0]

    def stat(in_a: torch.Tensor) -> torch.Tensor:
        # Block sums from one matrix-vector product instead of gathering sub-matrices.
        da = d @ in_a
        s_aa = in_a @ da
        s_ab = (1 - in_a) @ da
        s_bb = total - 2 * s_ab - s_aa
        return 2 * s_ab / (n * m) - s_aa / n**2 - s_bb / m**2

    observed = stat(torch.cat([torch.ones(n), torch.zeros(m)]).double())
    g = torch.Generator().manual_seed(seed)
    null = []
    for _ in range(permutations):
        in_a = torch.zeros(n + m, dtype=torch.float64)
        in_a[torch.randperm(n + m, generator=g)[:n]] = 1
        null.append(stat(in_a))
    return float(((torch.stack(null) >= observed).sum() + 1) / (permutations + 1))


@pytest.fixture(scope="module")
def exact_conditional():
    mixture = default_mixture()
    return mixture.sample(N, torch.Generator().manual_seed(99), mixture.class_index("red"))


@pytest.mark.parametrize("guidance", ["cfg", "classifier"])
def test_scale_one_samples_the_conditional(guidance, exact_conditional):
    run = run_playground(guidance, 1.0, target_class="red", steps=STEPS, num_samples=N, seed=1)
    assert permutation_p_value(run.samples, exact_conditional) > 0.01


def test_the_two_sample_test_has_power(exact_conditional):
    # Negative control: unguided samples of the whole mixture are not p(x | red).
    run = run_playground("none", 1.0, target_class="red", steps=STEPS, num_samples=N, seed=1)
    run_uncond = run_playground("classifier", 0.0, target_class="red", steps=STEPS, num_samples=N, seed=1)
    assert permutation_p_value(run_uncond.samples, exact_conditional) < 0.01
    assert energy_distance(run_uncond.samples, exact_conditional) > 10 * energy_distance(run.samples,
                                                                                        exact_conditional)


def test_classifier_guidance_at_one_equals_cfg_at_one():
    a = run_playground("cfg", 1.0, steps=50, num_samples=300, seed=3).samples
    b = run_playground("classifier", 1.0, steps=50, num_samples=300, seed=3).samples
    assert torch.allclose(a, b, atol=1e-8)


@pytest.mark.parametrize("guidance", ["cfg", "perp-cfg", "classifier"])
def test_guidance_trades_diversity_for_class_fidelity(guidance):
    stats = [run_playground(guidance, w, steps=STEPS, num_samples=N, seed=2).stats for w in (0.0, 1.0, 4.0)]
    fractions = [s["class_fraction"] for s in stats]
    spreads = [s["mode_spread"] for s in stats]
    assert fractions[0] < fractions[1] < fractions[2]
    assert spreads[1] > spreads[2]


def test_perp_cfg_diagnostics_are_recorded():
    run = run_playground("perp-cfg", 5.0, steps=20, num_samples=100, seed=0)
    assert run.result.series("delta_par").shape == (20, 100)
    assert run.result.series("delta_perp").mean() > 0


@pytest.mark.parametrize("kwargs", [dict(guidance="magic"), dict(steps=0), dict(num_samples=10**9),
                                    dict(target_class="purple"), dict(sampler="heun"), dict(scale=float("nan"))])
def test_bad_input_is_a_value_error(kwargs):
    with pytest.raises(ValueError):
        run_playground(**{"steps": 5, "num_samples": 10, **kwargs})


def test_every_method_runs_on_exact_scores_and_autoguidance_sharpens_without_spreading():
    """Autoguidance (a 2×-blurred mixture as the weak model) concentrates each mode like CFG but, unlike CFG,
    keeps the modes where they are: its global spread stays at the conditional model's."""
    from guidance.rules import RULE_NAMES

    base = dict(steps=60, num_samples=1500, seed=1)
    conditional = run_playground("cfg", 1.0, **base).stats
    for name in RULE_NAMES:
        sampler = "ddim" if name == "cfg++" else "ddpm"
        scale = 0.6 if name == "cfg++" else 3.0
        stats = run_playground(name, scale, sampler=sampler, **base).stats
        assert stats["n"] == 1500 and stats["class_fraction"] >= conditional["class_fraction"] - 0.02, (name, stats)
    auto = run_playground("autoguidance", 3.0, **base).stats
    cfg = run_playground("cfg", 3.0, **base).stats
    assert auto["mode_spread"] < 0.8 * conditional["mode_spread"]  # sharper modes
    assert abs(auto["global_spread"] - conditional["global_spread"]) < 0.1  # the layout unchanged …
    assert cfg["global_spread"] > conditional["global_spread"] + 0.2  # … where CFG pushes the modes apart
    with pytest.raises(ValueError, match="DDIM step"):
        run_playground("cfg++", 0.6, sampler="ddpm", steps=5, num_samples=10)
    with pytest.raises(ValueError, match="PAG does not apply here"):
        run_playground("cfg", 3.0, steps=5, num_samples=10, pag_scale=3.0)
