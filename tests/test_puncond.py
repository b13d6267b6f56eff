"""/p_uncond: the shipped 2D networks are the files, their measured branch errors, and the endpoint's task.

The error claims are measured properties of the shipped weights (``assets/toy/puncond/``), checked for every
training seed on 5 000 draws per network (the eval script uses 20 000); the margins are stated at each assert
and leave the measured values (docs/results.md#p_uncond) a factor of several of room.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from experiments.puncond import P_VALUES, TRAINING_SEEDS, branch_errors, guided_comparison
from guidance.sampler import ModelCall
from models.architectures.gmm2d import GMMDenoiser, default_mixture
from models.architectures.score_mlp import (
    MAKE_THEM,
    PUNCOND_DIR,
    LearnedScoreDenoiser,
    PuncondRecord,
    load_puncond_net,
    weights_name,
)
from models.loading.sd import ModelUnavailable
from models.profiles import load_profile
from pipelines.playground import make_scheduler, run_playground
from tasks.puncond import PUNCOND

POINTS_PER_T = 100  # × 50 timesteps = 5 000 draws per network


@pytest.fixture(scope="module")
def record() -> PuncondRecord:
    return PuncondRecord.read()


@pytest.fixture(scope="module")
def errors(record):
    return {(p, seed): branch_errors(load_puncond_net(p, seed), points_per_t=POINTS_PER_T)
            for p in (0.0, 0.1, 1.0) for seed in record.seeds}


def test_the_loaded_networks_are_the_shipped_files(record):
    assert record.p_values == P_VALUES and record.seeds == TRAINING_SEEDS
    config = record.config
    expected_shapes = {"class_embedding.weight": (config.num_classes + 1, config.class_dim),
                       "mlp.0.weight": (config.hidden, 2 + 2 * config.time_frequencies + config.class_dim),
                       f"mlp.{2 * config.depth}.weight": (2, config.hidden)}
    for p in record.p_values:
        for seed in record.seeds:
            path = PUNCOND_DIR / weights_name(p, seed)
            assert path.stat().st_size < 100_000, path  # small files: ~50 kB each
            stored = load_file(str(path))
            state = load_puncond_net(p, seed).state_dict()
            assert stored.keys() == state.keys(), path
            assert all(torch.equal(stored[k], state[k]) for k in stored), path
            assert all(tuple(stored[k].shape) == shape for k, shape in expected_shapes.items()), path


def test_p0_leaves_the_unconditional_branch_untrained(errors, record):
    for seed in record.seeds:
        e = errors[0.0, seed]
        # measured ≈ 0.004 vs 0.2–0.35: the untrained null embedding's branch is ≥ 10× worse (margin ~5×) and worse
        # than ignoring the label altogether would be (the label effect, 0.067)
        assert e.uncond > 10 * e.cond and e.uncond > e.label_effect, (seed, e.summary())


def test_p1_leaves_the_conditional_branch_untrained(errors, record):
    for seed in record.seeds:
        e = errors[1.0, seed]
        # measured ≈ 0.007 vs ≥ 0.1: the reverse, with the same margins
        assert e.cond > 10 * e.uncond and e.cond > e.label_effect, (seed, e.summary())


def test_p01_trains_both_branches(errors, record):
    for seed in record.seeds:
        e = errors[0.1, seed]
        # measured ≈ 0.004 and ≈ 0.009: both far below the label effect (margin ~2× on the unconditional one)
        assert max(e.cond, e.uncond) < 0.3 * e.label_effect, (seed, e.summary())


def test_a_denoiser_runs_through_the_playground_loop_unchanged():
    """Passing the exact denoiser explicitly gives the playground's samples bit for bit: the learned networks take
    the very path the exact scores take, only the ε differs."""
    mixture = default_mixture()
    alpha_bars = make_scheduler("ddpm").alphas_cumprod.double()
    default = run_playground("cfg", 3.0, steps=20, num_samples=200, seed=4)
    explicit = run_playground("cfg", 3.0, steps=20, num_samples=200, seed=4,
                              denoiser=GMMDenoiser(mixture, mixture.class_index("red"), alpha_bars))
    assert torch.equal(default.samples, explicit.samples)


def test_the_learned_denoiser_maps_branches_to_labels():
    net = load_puncond_net(0.1, 0)
    denoiser = LearnedScoreDenoiser(net, label=2)
    labels = denoiser.branch_labels(ModelCall(("uncond", "cond"), 0, 1), rows_per_branch=3)
    assert labels.tolist() == [net.config.null_label] * 3 + [2] * 3
    with pytest.raises(ValueError, match="weak"):
        denoiser(torch.zeros(4, 2, dtype=torch.float64), torch.tensor(500), ModelCall(("weak", "cond"), 0, 1))


@pytest.mark.parametrize("profile_name", ["toy", "full"])
def test_the_task_returns_its_outputs_in_every_profile(profile_name):
    result = PUNCOND(load_profile(profile_name), p_uncond=0.1, scale=3.0, steps=10, num_samples=100, seed=3)
    plot, stats = result.values(PUNCOND.spec)
    assert isinstance(plot, Image.Image) and plot.width > 800
    direct = guided_comparison(load_puncond_net(0.1, 0), 3.0, steps=10, num_samples=100, seed=3).summary()
    assert {k: stats[k] for k in direct} == direct
    assert {"cond_error", "uncond_error", "label_effect", "reproduce"} <= set(stats)
    assert "api_name='/p_uncond'" in stats["reproduce"]


@pytest.mark.parametrize("bad", [dict(p_uncond=0.3), dict(p_uncond="0.1"), dict(training_seed=7),
                                 dict(scale="nan"), dict(scale=31), dict(steps=0), dict(num_samples=10**6),
                                 dict(target_class="purple"), dict(sampler="euler"), dict(seed=-2)])
def test_bad_inputs_are_refused_naming_the_field(bad):
    with pytest.raises(ValueError) as err:
        PUNCOND(load_profile("toy"), **bad)
    assert next(iter(bad)) in str(err.value)


def test_missing_weights_say_how_to_make_them(tmp_path):
    with pytest.raises(ModelUnavailable, match=MAKE_THEM.replace(".", r"\.")):
        load_puncond_net(0.1, 0, folder=tmp_path)
