"""A small random ``UNet2DConditionModel``: what the zero-convolution panel measures on when no model is loaded, and
the UNet of the test fixtures (``testing/tiny.py``)."""

from __future__ import annotations


def tiny_unet(cross_attention_dim: int = 32, in_channels: int = 4, sample_size: int = 16, **overrides):
    from diffusers import UNet2DConditionModel

    config = dict(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=in_channels,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    config.update(overrides)
    return UNet2DConditionModel(**config)
