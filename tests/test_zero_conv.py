"""ControlNet's zero convolutions: exact no-op at initialisation, non-zero analytic gradients."""

import pytest
import torch

from experiments.zero_conv import zero_conv_analysis
from models.architectures.controlnet_layout import embedding_channels
from testing.tiny import tiny_unet


@pytest.fixture(scope="module")
def report():
    torch.manual_seed(0)
    return zero_conv_analysis(tiny_unet(), downsample=8, latent_size=8, seed=0)


def test_controlnet_at_init_leaves_the_unet_bit_identical(report):
    assert report.zero_convs == 5  # conv_in + 2 down blocks' outputs (incl. downsampler) + mid
    assert report.max_abs_residual == 0.0
    assert report.max_abs_output_change == 0.0
    assert report.bit_identical


def test_zero_conv_gradients_are_nonzero_and_analytic(report):
    assert report.min_weight_grad_norm > 1e-6
    assert all(n > 0 for n in report.weight_grad_norms)
    assert report.weight_grad_rel_error <= 1e-5
    assert report.bias_grad_rel_error <= 1e-5


def test_gradient_reaches_the_copy_only_after_the_zero_convs_move(report):
    assert report.trunk_grad_max_abs == 0.0
    assert report.trunk_grad_norm_after_one_step > 0.0


def test_pixel_space_layout_and_json():
    r = zero_conv_analysis(downsample=1, latent_size=8, seed=1)
    assert r.bit_identical and r.weight_grad_rel_error <= 1e-5
    assert set(r.as_dict()) >= {"bit_identical", "weight_grad_rel_error", "bias_grad_rel_error"}


@pytest.mark.parametrize("bad", [0, 3, 16, -8])
def test_embedding_channels_rejects_other_factors(bad):
    with pytest.raises(ValueError, match="downsampled by 1, 2, 4 or 8"):
        embedding_channels(bad)
    assert embedding_channels(8) == (16, 32, 96, 256) and embedding_channels(1) == (16,)
